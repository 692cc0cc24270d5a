"""The one way a read error in a DataLoader worker reaches the trainer.

A worker that meets an AvdataError (a shard that cannot be read after retries, a bad sample) yields a
:class:`ShardFailure` in place of a sample; collation passes it through, and the main process raises it
(:func:`raise_failures`, :class:`CheckedBatches`) with its own message and no worker traceback, while the
workers shut down normally.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from torch.utils.data import DataLoader

from avdata.errors import AvdataError

__all__ = ["ShardReadError", "ShardFailure", "raise_failures", "CheckedBatches", "short_reason"]


class ShardReadError(AvdataError):
    """A shard could not be read after retries. The message names the shard URL and the way out.

    Constructed from one message string, so that a :class:`ShardFailure` can rebuild it in the main
    process."""

    @classmethod
    def for_shard(cls, url: str, cause: BaseException | str, attempts: int) -> "ShardReadError":
        return cls(f"shard {url} could not be read after {attempts} attempts ({cause}); "
                   "check the server or disk, then rerun with --resume to continue from the last checkpoint")


def short_reason(exc: BaseException) -> str:
    text = str(exc).split(" @ <")[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class ShardFailure:
    """A read error met in a DataLoader worker, passed on as data so that the main process raises it with
    its own message (no worker traceback) and the workers shut down at once."""

    kind: str
    message: str

    def error(self) -> AvdataError:
        return ShardReadError(self.message) if self.kind == "ShardReadError" else AvdataError(self.message)


def raise_failures(batches: Iterable) -> Iterator[tuple]:
    for batch in batches:
        if isinstance(batch, ShardFailure):
            raise batch.error()
        yield batch


class CheckedBatches:
    """A DataLoader that raises the read errors its workers pass on (see :class:`ShardFailure`)."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[tuple]:
        return raise_failures(iter(self.loader))  # made now: the workers start at once
