"""Object storage (`s3://`, `gs://`; `hf://` for uploads) through fsspec, answering like an HTTP response.

An object opened here looks to its reader like an http(s) response (`avdata.fetch.transport.open_source`):
status 200, or 206 for a range; `Content-Length` and `Content-Range` headers; `read(n)`. A missing object
raises HTTPError 404 and a refused one 403. So the download engine, `read_small` and the shard readers
treat every remote the same way, with the same size caps, range resume, stall rule and retries.

Each store's library is an optional extra (`pip install -e ".[s3]"` in the checkout, `[gcs]`, `[hf]`); without it,
or without credentials, the error names what to install or set, and credentials a store refuses end the command at
once (see `store_error` and `avdata.fetch.gcs_auth`). Credentials come from where each store's
own tools look: S3 from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, `AWS_PROFILE` and
~/.aws/credentials, ~/.aws/config (an S3-compatible server, MinIO or Ceph, by `AWS_ENDPOINT_URL` or
`endpoint_url` in the profile); Google Cloud Storage from `GOOGLE_APPLICATION_CREDENTIALS` or
`gcloud auth application-default login` (public buckets need none; `STORAGE_EMULATOR_HOST` for an
emulator); the Hub from `HF_TOKEN` or `hf auth login`.
"""

from __future__ import annotations

import email.message
import importlib
import os
import urllib.error
from pathlib import Path
from typing import Any

from avdata.errors import AvdataError, install_hint
from avdata.fetch.gcs_auth import CREDENTIALS as GCS_CREDENTIALS
from avdata.fetch.gcs_auth import Unauthorized, renew_credentials, unauthorized_trace
from avdata.fetch.responses import FileResponse
from avdata.hashing import git_blob_id

__all__ = ["ObjectResponse", "filesystem", "object_size", "open_object", "STORES", "store_info", "upload_target",
           "holds_file", "upload_file", "refused", "refusal", "store_error", "Unauthorized"]

#: scheme -> (fsspec protocol, the package it needs, the extra that installs it, where credentials come from)
STORES: dict[str, tuple[str, str, str, str]] = {
    "s3": ("s3", "s3fs", "s3", "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or ~/.aws/credentials "
           "(and AWS_ENDPOINT_URL for an S3-compatible server)"),
    "gs": ("gcs", "gcsfs", "gcs", GCS_CREDENTIALS),
    "gcs": ("gcs", "gcsfs", "gcs", GCS_CREDENTIALS),
    "hf": ("hf", "huggingface_hub", "hf", "HF_TOKEN, or `hf auth login`"),
}
#: Bytes fetched per request while a shard is streamed (fsspec's read-ahead block).
BLOCK_SIZE = 8 << 20


def store_info(url: str) -> tuple[str, str, str, str]:
    """`STORES`' row for the URL's scheme: fsspec protocol, package, extra, where credentials come from."""
    scheme = url.split("://", 1)[0].lower()
    if scheme not in STORES:
        raise AvdataError(f"{url}: not an object storage URL (s3://, gs://, hf://)")
    return STORES[scheme]


def filesystem(url: str, timeout: float = 60.0) -> tuple[Any, str]:
    """The fsspec filesystem for `url` and the path inside it; AvdataError naming the extra to install."""
    protocol, package, extra, _ = store_info(url)
    try:
        importlib.import_module(package)
        import fsspec
    except ImportError as exc:
        raise AvdataError(f"{url}: reading or writing {url.split('://')[0]}:// needs the {package} package: "
                          f"{install_hint(extra, package)}") from exc
    _fork_safe()
    options: dict[str, Any] = {}
    if protocol == "s3":  # bounded waits: a silent server is retried, then reported, never waited on forever
        options["config_kwargs"] = {"connect_timeout": min(timeout, 30.0), "read_timeout": timeout,
                                    "retries": {"max_attempts": 3, "mode": "standard"}}
    elif protocol == "gcs":  # a 401 ends the call at once (gcsfs would retry it for about 35 s)
        options["timeout"] = timeout
        options["session_kwargs"] = {"trace_configs": [unauthorized_trace()]}
    elif protocol == "hf":  # the Hub the hf:// readers use (HF_ENDPOINT read now, not when the library loaded)
        from avdata.fetch.hub import endpoint

        options["endpoint"] = endpoint()
    fs = fsspec.filesystem(protocol, **options)
    if protocol == "gcs":
        renew_credentials(url, fs)
    return fs, fs._strip_protocol(url)


_FORK_HOOKED = False


def _fork_safe() -> None:
    """Make a forked process (a DataLoader worker) start its own fsspec event loop. fsspec runs every
    s3/gs call on one loop thread; a fork copies the loop but not its thread, so the child's first call
    waits forever on a loop nobody runs. fsspec resets it itself from 2025.3.1 on; with the older
    versions the extras allow, `scmrl-train --workers N` on s3:// shards hung in every worker."""
    global _FORK_HOOKED
    if not _FORK_HOOKED and hasattr(os, "register_at_fork"):
        import fsspec.asyn

        os.register_at_fork(after_in_child=fsspec.asyn.reset_lock)
        _FORK_HOOKED = True


def refused(exc: BaseException) -> bool:
    """Whether a store refused the request's credentials or access: s3fs's PermissionError; gcsfs's
    HttpError with status 401 (an expired or invalid token) or 403, and the plain OSError("Forbidden: ...")
    it raises for a 403 (neither is a PermissionError)."""
    if isinstance(exc, PermissionError):
        return True
    if type(exc).__name__ == "HttpError" and getattr(exc, "code", None) in (401, 403):
        return True
    return type(exc) is OSError and str(exc).startswith("Forbidden: ")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def refusal(exc: BaseException) -> tuple[int, str]:
    """The status a store answered a refused request with (401 or 403) and its message, once: from our
    `Unauthorized`, gcsfs's HttpError or "Forbidden: <path>\n<message>", or the botocore error behind
    s3fs's PermissionError."""
    status, message = 403, _one_line(exc)
    if isinstance(exc, Unauthorized):
        status = exc.status
    elif type(exc).__name__ == "HttpError":
        status, message = int(getattr(exc, "code", 403)), _one_line(BaseException(getattr(exc, "message", exc)))
    elif type(exc) is OSError:
        message = _one_line(BaseException(str(exc).partition("\n")[2]))
    else:
        answer = _s3_answer(exc)
        if answer is not None:
            status = answer[0] or 403
            message = _one_line(BaseException(f"{answer[1]}: {answer[2]}".strip(": ")))
    name = "Unauthorized" if status == 401 else "Forbidden"
    return status, name if message in ("", name, str(status), f"{status}: {name}") else f"{name}: {message}"


#: S3's error codes (HTTP 400) for temporary credentials it no longer takes: no retry changes them
S3_TOKEN_CODES = frozenset({"ExpiredToken", "InvalidToken", "TokenRefreshRequired"})


def _s3_answer(exc: BaseException) -> tuple[int, str, str] | None:
    """The HTTP status, error code and message botocore read from S3's answer behind `exc` (s3fs raises
    its own exception with botocore's ClientError as the cause), or None."""
    for e in (exc, exc.__cause__):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            error = response.get("Error", {})
            return (int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)), str(error.get("Code", "")),
                    str(error.get("Message", "")))
    return None


def _s3_token_refused(url: str, exc: BaseException) -> tuple[str, str] | None:
    """S3's error code and message when it refused the session token (expired, or not one it issued).
    S3 answers a HEAD with a bare 400 (no body, so botocore reads the code "400", "Bad Request"); then
    one listing of the same path, whose answer carries the code, says whether the token was the cause."""
    answer = _s3_answer(exc)
    if answer is None or answer[0] != 400 or store_info(url)[0] != "s3":
        return None
    if answer[1] == "400":
        try:
            fs, path = filesystem(url)
            bucket, _, key = path.partition("/")
            fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=key, MaxKeys=1)
            return None
        except Exception as probe:
            answer = _s3_answer(probe)
    return (answer[1], answer[2]) if answer is not None and answer[1] in S3_TOKEN_CODES else None


def _s3_token_error(url: str, exc: BaseException) -> AvdataError | None:
    """The error for a session token S3 refused, naming where it comes from and how to renew it."""
    refused_token = _s3_token_refused(url, exc)
    if refused_token is None:
        return None
    code, message = refused_token
    if os.environ.get("AWS_SESSION_TOKEN"):
        todo = ("set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN together from new temporary "
                "credentials (or unset AWS_SESSION_TOKEN if the keys are long-term ones)")
    else:
        profile = os.environ.get("AWS_PROFILE") or "default"
        todo = (f"refresh the profile {profile!r} (`aws sso login --profile {profile}`, or new keys and "
                "aws_session_token in ~/.aws/credentials)")
    return AvdataError(f"{url}: S3 refused the session token (HTTP 400 {code}: {_one_line(BaseException(message))}); "
                       f"renew it: {todo}")


def store_error(url: str, exc: BaseException) -> AvdataError | None:
    """An AvdataError that says what to do, for a store library's error that has a known cause: no
    credentials or refused ones, or (the Hub) offline mode, a repository or revision that does not exist.
    None otherwise."""
    return _s3_token_error(url, exc) or _known_error(url, exc)


def _known_error(url: str, exc: BaseException) -> AvdataError | None:
    """`store_error` for all but a refused S3 session token (which may cost a request to tell)."""
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError",
                "RefreshError", "LocalTokenNotFoundError"):
        return AvdataError(f"{url}: no usable credentials ({exc}); set {store_info(url)[3]}")
    if refused(exc):
        status, reason = refusal(exc)
        return AvdataError(f"{url}: access denied (HTTP {status} {reason}); check the credentials: "
                           f"{store_info(url)[3]}")
    if name == "OfflineModeIsEnabled":
        return AvdataError(f"{url}: huggingface_hub is in offline mode (HF_HUB_OFFLINE is set); unset it to reach "
                           "the Hub")
    if name in ("RepositoryNotFoundError", "RevisionNotFoundError"):
        from avdata.fetch.hub import parse_hub_url

        where = parse_hub_url(url)
        if name == "RevisionNotFoundError":
            return AvdataError(f"{url}: the dataset repository {where.repo_id} has no revision {where.revision!r}; "
                               f"create the branch first (`hf repo branch create {where.repo_id} {where.revision} "
                               "--repo-type dataset`)")
        return AvdataError(f"{url}: no dataset repository {where.repo_id} on the Hub, or no access to it: create it "
                           f"(`hf repo create {where.repo_id} --repo-type dataset`) and check {store_info(url)[3]}")
    return None


def _http_error(url: str, code: int, reason: str) -> urllib.error.HTTPError:
    return urllib.error.HTTPError(url, code, reason, email.message.Message(), None)


def _call(url: str, fn, *args: Any, **kwargs: Any) -> Any:
    """`fn(*args)` with a store's errors turned into the HTTP-like ones readers expect."""
    try:
        return fn(*args, **kwargs)
    except FileNotFoundError as exc:
        raise _http_error(url, 404, "Not Found (no such object)") from exc
    except Exception as exc:
        token = _s3_token_error(url, exc)  # before `refused`: s3fs makes ExpiredToken a PermissionError
        if token is not None:
            raise token from exc
        if refused(exc):  # its own status to its readers (never retried), who name the credentials
            raise _http_error(url, *refusal(exc)) from exc
        known = _known_error(url, exc)
        if known is not None:
            raise known from exc
        raise


def object_size(url: str, timeout: float = 60.0) -> int:
    """The size of one object; HTTPError 404 when there is none."""
    fs, path = filesystem(url, timeout)
    info = _call(url, fs.info, path)
    if info.get("type") == "directory":
        raise _http_error(url, 404, "Not Found (a folder, not an object)")
    return int(info["size"])


#: the object metadata key holding an uploaded object's sha256 (S3 and GCS)
SHA_KEY = "sha256"


def upload_target(url: str) -> tuple[Any, str]:
    """The filesystem and path to upload to `url`, with no listing cached from earlier calls; for the Hub,
    its RepositoryNotFoundError / RevisionNotFoundError (see `store_error`) first, since its filesystem
    reads a missing repository or branch as a missing file."""
    fs, root = filesystem(url)
    fs.invalidate_cache()
    if store_info(url)[0] == "hf":
        from huggingface_hub import HfApi

        from avdata.fetch.hub import parse_hub_url

        where = parse_hub_url(url)
        HfApi(endpoint=fs.endpoint, token=fs.token).repo_info(where.repo_id, repo_type="dataset",
                                                              revision=where.revision)
    return fs, root


def holds_file(fs, url: str, path: str, local: Path, sha256: str) -> bool:
    """Whether object `path` holds exactly `local` (whose sha256 is `sha256`), by a content hash the store
    keeps, never by size alone: on S3 and GCS the sha256 `upload_file` wrote into the object's metadata, on
    the Hub its LFS sha256 or git's blob id."""
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return False
    if info.get("type", "file") != "file" or info.get("size") != local.stat().st_size:
        return False
    protocol = store_info(url)[0]
    if protocol == "hf":
        lfs = info.get("lfs") or {}
        if lfs.get("sha256"):
            return lfs["sha256"] == sha256
        return bool(info.get("blob_id")) and info["blob_id"] == git_blob_id(local)
    meta = fs.metadata(path) if protocol == "s3" else info.get("metadata")
    return isinstance(meta, dict) and meta.get(SHA_KEY) == sha256


def upload_file(fs, url: str, local: Path, path: str, sha256: str) -> None:
    """Upload one file whole, with its sha256 in the object's metadata where the store keeps metadata."""
    protocol = store_info(url)[0]
    if protocol == "s3":
        fs.put_file(str(local), path, Metadata={SHA_KEY: sha256})
    elif protocol == "gcs":
        fs.put_file(str(local), path, metadata={SHA_KEY: sha256})
    else:
        fs.put_file(str(local), path)


class ObjectResponse(FileResponse):
    """An object read from `offset` on, answering like an HTTP response (200, or 206 for a range)."""

    def __init__(self, url: str, offset: int = 0, timeout: float = 60.0) -> None:
        fs, path = filesystem(url, timeout)
        f = _call(url, fs.open, path, "rb", block_size=BLOCK_SIZE, cache_type="readahead")
        super().__init__(url, f, int(f.size), offset)

    def read(self, n: int = -1) -> bytes:
        return _call(self.url, self._f.read, n)


def open_object(url: str, offset: int = 0, timeout: float = 60.0) -> ObjectResponse:
    return ObjectResponse(url, offset, timeout)
