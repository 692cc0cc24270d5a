"""`python -m cli.train_app_module ...` runs scmrl-train (for torchrun, which needs a module or script)."""

from cli.train_app import main_train

if __name__ == "__main__":
    main_train()
