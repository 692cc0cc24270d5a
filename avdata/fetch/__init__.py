"""Getting files: the one download engine, pinned source lists, raw-copy checks.

- `download`: `fetch_files` / `fetch_url`, the public entry: many files in parallel, one report.
- `transfer`: one file: `.part`, resume, retries with back-off, size cap, stall rule, rename.
- `checks`: is a received or present file the expected one (LFS stub, size, sha256, md5, own check).
- `transport`: opening an http(s), object storage, Hub or local source with headers and ranges; `read_small`
  for manifests.
- `objstore`: s3://, gs:// (and hf:// uploads) through fsspec, answering like an HTTP response.
- `hub`: hf://datasets/... addresses mapped onto the Hub's download URLs, with the user's token.
- `disk`: the `.part` file without following symlinks; a full disk.
- `responses`: a local file or storage object answering like an HTTP response (ranges, 416).
- `session`: what one run's transfers share: settings, progress bar, early stop, log throttle.
- `results`: `RemoteFile`, `FileResult`, `DownloadReport` and the errors.
- `urls`: `is_url`, `join_url`, `redact` (no credentials in what is shown), `basic_auth` (user:pass@ URLs).
- `unpack`: `unpack_zip`, the one zip extractor (no paths outside the target, no links, bounded, resumable).
- `sources`, `lfs`, `verify_raw`: pinned source lists, Git LFS stubs, checking a raw copy.
"""
