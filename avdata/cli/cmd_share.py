"""`avdata serve DIR`, `avdata pull URL --to DIR` and `avdata push DIR URL`: sharing a prepared shards folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from avdata.errors import AvdataError
from avdata.progress import console, setup_logging
from avdata.cli.errors import fail

def serve_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="Folder to serve, e.g. a shards folder made by "
                                     "`avdata prepare` (manifest.json, README.md, *.tar)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on: 127.0.0.1 for this machine "
                             "only, 0.0.0.0 for every network interface (your LAN can then read the folder)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    timeout: float = typer.Option(30.0, "--timeout", min=0.1, help="Seconds a connection may stay silent "
                                  "(a request not finished, a body not read) before it is closed."),
    max_connections: int = typer.Option(64, "--max-connections", min=1, help="Connections served at once; "
                                        "more are answered 503 (retry later), so idle connections cannot pile "
                                        "up threads."),
) -> None:
    """Serve a folder over HTTP with Range support until Ctrl-C.

    Others then run `avdata pull http://HOST:PORT --to DIR`,
    or read it directly with `avdata inspect URL` or the trainer.

    Nothing here is special: any static file server (nginx, S3, a Hugging Face dataset repository)
    serving the same folder works the same way.
    """
    from avdata.share.serve import make_server, server_url

    setup_logging(False)
    try:
        if not directory.is_dir():  # a typo would otherwise be served as a folder that answers 404 to everything
            raise AvdataError(f"{directory}: {'not a folder' if directory.exists() else 'no such folder'}; "
                              "pass the folder to serve (a shards folder holds manifest.json)")
        server = make_server(directory, host, port, timeout=timeout, max_connections=max_connections)
    except AvdataError as exc:
        fail(exc)
        return
    url = server_url(server)
    console.print(f"serving [bold]{directory.resolve()}[/] at [bold]{url}[/]  (Ctrl-C to stop)\n"
                  f"  fetch it elsewhere with: avdata pull {url} --to DIR", highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        server.server_close()


def pull_cmd(
    url: str = typer.Argument(..., metavar="URL", help="Address of a shards folder (the folder or its "
                              "manifest.json): http(s)://... from `avdata serve` or any web server, "
                              "s3://BUCKET/PATH, gs://BUCKET/PATH, a Hugging Face dataset repository "
                              "(hf://datasets/OWNER/NAME, or hf://datasets/OWNER/NAME@REVISION/FOLDER), or a local "
                              "folder path."),
    to: Path = typer.Option(..., "--to", help="Folder to pull into (created). A rerun resumes and skips shards "
                            "already verified."),
    split: Optional[list[str]] = typer.Option(None, "--split", help="Only this split's shards (repeat for "
                                              "several; default: all). manifest.json is still copied whole."),
    jobs: int = typer.Option(8, "--jobs", "-j", min=1, help="Shards downloaded at once."),
    retries: int = typer.Option(4, "--retries", min=0, help="Retries per shard after a failure, with back-off."),
    backoff: float = typer.Option(1.0, "--backoff", min=0.0, help="Seconds to wait before the first retry "
                                  "of a shard; doubled for each further retry (at most 60)."),
    stall_timeout: float = typer.Option(60.0, "--stall-timeout", min=0.0, help="Abort an attempt (and retry it) "
                                        "when fewer than 16 KiB arrive in this many seconds; 0 turns the rule off."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Pull even when --to already holds another "
                                   "dataset (its manifest is replaced; its shards stay)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every file fetched or skipped."),
) -> None:
    """Copy a prepared shards folder: every shard checked against the manifest's sha256 and size.

    manifest.json is written last, and only when every shard arrived intact,
    so an interrupted pull never looks complete: run it again to resume.
    Exit code 1 when a shard failed.
    """
    from avdata.share.pull import pull

    from avdata.cli.cmd_download import print_download_summary

    setup_logging(verbose)
    try:
        report = pull(url, to, splits=split or None, jobs=jobs, retries=retries, backoff=backoff,
                      overwrite=overwrite, stall_seconds=stall_timeout)
    except AvdataError as exc:
        fail(exc)
        return
    print_download_summary(report, title="pull")
    if not report.ok:
        raise typer.Exit(1)


def push_cmd(
    directory: Path = typer.Argument(..., metavar="DIR", help="A shards folder made by `avdata prepare` (or "
                                     "`avdata pull`)."),
    url: str = typer.Argument(..., metavar="URL", help="Where to upload it: s3://BUCKET/PATH, gs://BUCKET/PATH "
                              "or hf://datasets/OWNER/NAME/FOLDER (an existing dataset repository)."),
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, help="Objects uploaded at once (one at a time to the Hub)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Push even when URL already holds another dataset "
                                   "(its manifest is replaced)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what is uploaded or skipped, and the "
                                 "storage libraries' own messages (credentials found, each HTTP request)."),
) -> None:
    """Upload a shards folder to object storage, after verifying it (sha256, sizes, sample counts).

    Shards first, manifest.json last, so a reader never sees a manifest naming missing shards.
    A rerun resumes: an object already there is skipped only when its content is known to be the same
    (its sha256 in S3/GCS metadata, the Hub's content hash); same size with other bytes is uploaded again.

    Credentials come from each store's usual places: AWS_* variables or ~/.aws for s3:// (AWS_ENDPOINT_URL
    for an S3-compatible server: MinIO, Ceph), GOOGLE_APPLICATION_CREDENTIALS or gcloud for gs://,
    HF_TOKEN or `hf auth login` for hf://.
    """
    from rich.markup import escape

    from avdata.share.push import push

    setup_logging(verbose)
    try:
        report = push(directory, url, jobs=jobs, overwrite=overwrite)
    except AvdataError as exc:
        fail(exc)
        return
    console.print(f"pushed [bold]{escape(str(directory))}[/] to [bold]{escape(report.url)}[/]: {report.summary()}",
                  highlight=False)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
    app.command("pull")(pull_cmd)
    app.command("push")(push_cmd)
