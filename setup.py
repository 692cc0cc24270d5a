"""Which folders install as which packages (the rest of the metadata is in pyproject.toml).

cli/ and manifests/ are top-level folders of the repository, but they install inside the avdata package
(`avdata.cli`, `avdata.manifests`), so the wheel adds no top-level names besides avdata and scmrl. A
mapped folder cannot be found by pyproject's `packages.find`, hence this file.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["avdata", "avdata.*", "scmrl", "scmrl.*"]) + ["avdata.cli", "avdata.manifests"],
    package_dir={"avdata.cli": "cli", "avdata.manifests": "manifests"},
)
