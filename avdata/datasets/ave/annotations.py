"""AVE's text lists: `Annotations.txt`, `trainSet.txt`, `valSet.txt`, `testSet.txt`.

Each line is `Category&VideoID&Quality&StartTime&EndTime`, e.g. `Church bell&RUhOCu3LNXM&good&0&10`:
the clip's one event class, its YouTube id, the annotators' quality mark and the event's start and end
in whole seconds within the ten-second clip. The copies inside the dataset's zip start with that line as
a header; the copy in the authors' GitHub repository has none: both are read. The three split lists
together hold the 4,143 rows of `Annotations.txt` (3,339 train, 402 val, 402 test in the paper).

A video may appear in more than one row: 45 of the 4,097 videos of the real `Annotations.txt` carry two
or three categories (mostly "Male speech, man speaking" and "Female speech, woman speaking"); each row is
a sample of its own, as the dataset's authors count them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from avdata.errors import AvdataError
from avdata.shards.reader import read_capped

#: The 28 category names exactly as `Annotations.txt` spells them, in Python's sorted (code point) order,
#: which is the class index order of the shards (Accordion 0 ... Violin, fiddle 27).
CATEGORIES: list[str] = sorted([
    "Accordion", "Acoustic guitar", "Baby cry, infant cry", "Banjo", "Bark", "Bus", "Cat", "Chainsaw",
    "Church bell", "Clock", "Female speech, woman speaking", "Fixed-wing aircraft, airplane", "Flute",
    "Frying (food)", "Goat", "Helicopter", "Horse", "Male speech, man speaking", "Mandolin", "Motorcycle",
    "Race car, auto racing", "Rodents, rats, mice", "Shofar", "Toilet flush", "Train horn", "Truck",
    "Ukulele", "Violin, fiddle",
])

HEADER = "Category&VideoID&Quality&StartTime&EndTime"
ANNOTATIONS = "Annotations.txt"
SPLIT_FILES = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}
TEXT_FILES = (ANNOTATIONS, *SPLIT_FILES.values())
#: The real lists are at most 200 KB (Annotations.txt); a list file past this is no AVE list.
MAX_LIST_BYTES = 16 << 20

#: YouTube ids: letters, digits, '-' and '_' (never a dot, so they are valid shard keys as they are).
VIDEO_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Row:
    category: str
    video_id: str
    quality: str
    start_s: float
    end_s: float
    line: int  # 1-based line number in its file

    @property
    def label(self) -> int:
        return CATEGORIES.index(self.category)


def _seconds(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise AvdataError(f"{where}: {what} {text!r} is not a number of seconds") from None
    if not 0 <= value <= 3600:
        raise AvdataError(f"{where}: {what} {text!r} is outside a clip")
    return value


def parse_rows(text: str, source: str | Path) -> list[Row]:
    """Rows of one list (header line optional, blank lines ignored). A line that is not
    `Category&VideoID&Quality&StartTime&EndTime` with one of the 28 categories raises AvdataError naming
    the file and line: a wrong or damaged file must not give wrong labels."""
    rows: list[Row] = []
    for n, line in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        line = line.strip()
        if not line or (not rows and line.lower() == HEADER.lower()):
            continue
        where = f"{source}:{n}"
        parts = line.split("&")
        if len(parts) != 5:
            raise AvdataError(f"{where}: expected 5 fields {HEADER}, got {len(parts)} in {line[:80]!r}; "
                              "is this one of AVE's Annotations.txt / trainSet.txt / valSet.txt / testSet.txt?")
        category, video_id, quality, start, end = (p.strip() for p in parts)
        if category not in CATEGORIES:
            raise AvdataError(f"{where}: unknown category {category!r}; AVE's 28 are: {', '.join(CATEGORIES)}")
        if not VIDEO_ID.fullmatch(video_id):
            raise AvdataError(f"{where}: {video_id!r} is not a YouTube video id (letters, digits, - and _)")
        rows.append(Row(category, video_id, quality, _seconds(start, "StartTime", where),
                        _seconds(end, "EndTime", where), n))
    return rows


def read_rows(path: Path, display: str | None = None) -> list[Row]:
    """`parse_rows` of a file; `display` names it in messages (a path relative to the raw folder). The file
    is opened as a plain file (a FIFO under a list's name blocked prepare for good) and read up to
    MAX_LIST_BYTES."""
    data = read_capped(path, MAX_LIST_BYTES)
    if data is None:
        raise AvdataError(f"{display or path}: larger than {MAX_LIST_BYTES:,} bytes, far more than an AVE list "
                          "(Annotations.txt is 200 KB); is this an AVE list file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AvdataError(f"{display or path}: not a UTF-8 text list ({exc.reason}); is this an AVE list file?") \
            from None
    return parse_rows(text, display or path)


def format_rows(rows: list[tuple[str, str, str, float, float]], header: bool) -> str:
    """Lines in the dataset's own format (times written as whole seconds when they are)."""
    def sec(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else str(x)

    lines = [HEADER] if header else []
    lines += [f"{c}&{v}&{q}&{sec(s)}&{sec(e)}" for c, v, q, s, e in rows]
    return "\n".join(lines) + "\n"
