"""Why a remote shards folder has no manifest.json, and what to do: asked only once reading it got a 404.

A bare "not found" leaves the user guessing between a typo in the bucket, a folder never uploaded, and a
push that stopped before its manifest (push writes it last). Object storage is asked (one call for the
bucket, one for the path, each bounded by the store's timeout); the Hub says it in its `X-Error-Code`
header; a plain web server can only be told it is not serving a shards folder.
"""

from __future__ import annotations

import urllib.error

from avdata.fetch.hub import is_hub_url, parse_hub_url
from avdata.fetch.urls import redact

__all__ = ["missing_folder_hint"]


def missing_folder_hint(base: str, exc: urllib.error.HTTPError, timeout: float = 60.0) -> str:
    """What to say about the shards folder URL `base` whose manifest.json answered `exc` (a 404)."""
    push = f"`avdata push DIR {redact(base)}`"
    scheme = base.split("://", 1)[0].lower()
    if is_hub_url(base):
        return _hub_hint(base, exc, push)
    if scheme in ("s3", "gs", "gcs"):
        return _bucket_hint(base, push, timeout)
    return ("no manifest.json at this address: is it the URL of a shards folder (one `avdata serve DIR` or any "
            "web server serves as-is)?")


def _hub_hint(base: str, exc: urllib.error.HTTPError, push: str) -> str:
    where = parse_hub_url(base)
    code = exc.headers.get("X-Error-Code", "") if exc.headers is not None else ""
    if code == "RepoNotFound":
        return (f"there is no dataset repository {where.repo_id} on the Hub, or HF_TOKEN (or `hf auth login`) gives "
                f"no access to it: check the name and the token, or create it (`hf repo create {where.repo_id} "
                f"--repo-type dataset`) and {push}")
    if code == "RevisionNotFound":
        return f"the dataset repository {where.repo_id} has no revision {where.revision!r}: check the @REVISION"
    folder = f"folder {where.path!r}" if where.path else "top folder"
    return (f"the {folder} of {where.repo_id} holds no manifest.json: check the folder (the one holding "
            f"manifest.json), or upload a shards folder there first: {push}")


def _bucket_hint(base: str, push: str, timeout: float) -> str:
    from avdata.fetch.objstore import filesystem

    generic = (f"check the bucket and the path (the folder holding manifest.json), or upload a shards folder "
               f"there first: {push}")
    try:
        fs, path = filesystem(base, timeout)
        bucket = path.split("/", 1)[0]
        try:
            fs.info(bucket)
        except FileNotFoundError:
            return (f"there is no bucket {bucket!r}, or these credentials cannot see it: check its name; a new "
                    f"bucket is made with the store's own tools, then {push}")
        try:
            kind = fs.info(path).get("type") if path != bucket else "directory"
        except FileNotFoundError:
            kind = None
    except Exception:  # a refused or failing look-up: the hint is then the plain one
        return generic
    if kind == "directory":
        return (f"{redact(base)} holds objects but no manifest.json: point at the folder that holds it, or, if "
                f"a push there stopped before its end (manifest.json goes last), rerun {push}")
    return f"nothing is stored under {redact(base)}: {generic}"
