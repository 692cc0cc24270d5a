"""The `avdata` command-line app (Typer): it parses options and calls the avdata library, nothing more.
The trainer's apps are in `scmrl.cli`."""
