"""Is this the file we asked for? The checks on a fully received `.part` and on a file already present
under its final name: not a Git LFS pointer stub, the expected size, sha256, md5 and the file's own check
(a zip that opens, an HDF5 signature)."""

from __future__ import annotations

from pathlib import Path

from avdata.fetch.lfs import MAX_POINTER_SIZE, describe_pointer, is_lfs_pointer
from avdata.fetch.results import AttemptFailed, RemoteFile
from avdata.hashing import file_digests

LFS_HINT = ("this mirror serves Git LFS pointer stubs, not the media: use the repository's LFS media "
            "address (for GitHub: https://media.githubusercontent.com/media/<owner>/<repo>/<branch>), "
            "or run `git lfs pull` in a clone")


def check_received(part: Path, spec: RemoteFile) -> str:
    """The sha256 of `part` when it is the expected file; AttemptFailed saying why when it is not."""
    size = part.stat().st_size
    if size <= MAX_POINTER_SIZE and is_lfs_pointer(part):
        sha, _ = file_digests(part)
        if spec.sha256 is None or sha != spec.sha256:
            raise AttemptFailed(f"received a {describe_pointer(part)} instead of the file: {LFS_HINT}",
                                "lfs-pointer", fatal=True, expected_sha256=spec.sha256, actual_sha256=sha)
    if spec.size is not None and size != spec.size:
        sha, _ = file_digests(part)
        raise AttemptFailed(f"size mismatch: expected {spec.size:,} bytes, received {size:,}", "size",
                            expected_sha256=spec.sha256, actual_sha256=sha)
    sha, md5 = file_digests(part, spec.md5 is not None)
    if spec.sha256 is not None and sha != spec.sha256:
        raise AttemptFailed(f"sha256 mismatch: expected {spec.sha256}, got {sha}", "checksum",
                            expected_sha256=spec.sha256, actual_sha256=sha)
    if spec.md5 is not None and md5 != spec.md5:
        raise AttemptFailed(f"md5 mismatch: expected {spec.md5}, got {md5}", "md5", actual_sha256=sha)
    problem = spec.check(part) if spec.check is not None else None
    if problem:
        raise AttemptFailed(problem, "invalid", actual_sha256=sha)
    return sha


def check_present(final: Path, spec: RemoteFile, verify_existing: str) -> tuple[str, str | None]:
    """(problem, sha256) of a file already under its final name: problem "" when it can be kept; sha256
    None when it was not hashed (`verify_existing="size"` trusts a matching size of a verifiable file)."""
    size = final.stat().st_size
    problem = ""
    sha: str | None = None
    if spec.size is not None and size != spec.size:
        problem = f"size {size:,} instead of {spec.size:,}"
    elif is_lfs_pointer(final) and (spec.size is None or spec.size > MAX_POINTER_SIZE):
        problem = "a Git LFS pointer stub"
    elif verify_existing != "size" or not spec.verifiable:
        sha, md5 = file_digests(final, spec.md5 is not None)
        if spec.sha256 is not None and sha != spec.sha256:
            problem = f"sha256 {sha} instead of {spec.sha256}"
        elif spec.md5 is not None and md5 != spec.md5:
            problem = f"md5 {md5} instead of {spec.md5}"
    if not problem and spec.check is not None:
        problem = spec.check(final) or ""
    return problem, sha
