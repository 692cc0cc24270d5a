"""One package per dataset: `<pkg>/recipe.py` (options, plan, process, features, card), `<pkg>/sources.py`
(addresses, pinned lists, download options and plan) and `<pkg>/synth.py` (small raw trees in the real
formats, for tests and `avdata demo`); `registry.py` lists them, one line each. Shared by all: `recipe.py`
(the recipe contract), `options.py` (option fields several recipes take), `splits.py` (seeded
hold-outs and orders), `download_plan.py` (running a
download plan), `ziputil.py` (reproducible zips for the generators)."""
