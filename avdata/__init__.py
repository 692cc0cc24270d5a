"""avdata: raw audio-visual and neuromorphic datasets in, verified WebDataset shards out."""

__version__ = "0.1.0"

# cli/ and manifests/ are top-level folders of the repository that install as avdata.cli and avdata.manifests
# (setup.py). In a source checkout used without an install (PYTHONPATH=checkout) they are found here instead.
_here = __import__("pathlib").Path(__file__).resolve().parent
if not (_here / "cli").is_dir() and (_here.parent / "cli" / "avdata_app.py").is_file():
    __path__.append(str(_here.parent))  # noqa: F821 (a package's __path__)
