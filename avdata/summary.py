"""What is in a shards folder: the manifest's counts, and what the shards really hold when read back.

`summarize()` takes the per-split and per-class counts, bytes, skipped clips and the making options from
the manifest, then streams through the samples (all of them, or the first K per split) to report every
field's dtype and shape range, the value range of arrays, and clip durations found in the `json` field.
Members are capped by the manifest's features (`avdata.samples.iter_samples`) and JPEG frames decoded
one per sample (`avdata.field_stats`). Text from the manifest or shards is printed
escaped (`avdata.printable`, no rich markup).
Works the same on a local folder and on a folder behind an http(s) URL. `print_shards_summary()` renders the
result as rich tables (`avdata.contact_sheet` draws samples to a PNG).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any


from avdata.errors import AvdataError
from avdata.progress import make_progress
from avdata.samples import iter_samples, label_of
from avdata.shards.location import ShardsLocation, open_location
from avdata.shards.frames import group_jpeg_frames
from avdata.field_stats import FieldStats
from avdata.printable import printable
from avdata.pulled_splits import not_pulled, require_shards


def duration_of(meta: Any) -> float | None:
    """Audio duration in seconds from a sample's json: audio.duration_s, audio_duration_s or duration_s."""
    if not isinstance(meta, dict):
        return None
    candidates = []
    audio = meta.get("audio")
    if isinstance(audio, dict):
        candidates.append(audio.get("duration_s"))
    candidates += [meta.get("audio_duration_s"), meta.get("duration_s")]
    for value in candidates:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def _durations(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    total = float(sum(values))
    return {"count": len(values), "total_s": round(total, 3), "mean_s": round(total / len(values), 4),
            "min_s": round(min(values), 4), "max_s": round(max(values), 4)}


# --- the summary -------------------------------------------------------------------------------------


def summarize(spec: str | Path, splits: list[str] | None = None, sample: int | None = None,
              progress: bool | None = None) -> dict[str, Any]:
    """Summary of a shards folder (local path or http(s) URL) as a JSON-able dict.

    splits: only these (all when None). sample: read only the first K samples per split (all when None).
    The manifest's counts are under `splits.<name>`; what was read back is under `splits.<name>.read`.
    """
    if sample is not None and sample < 1:
        raise AvdataError("--sample must be at least 1")
    loc = open_location(spec)
    m = loc.manifest
    names = list(m.splits) if not splits else list(dict.fromkeys(splits))
    for name in names:
        m.split(name)  # AvdataError naming the splits there are
    absent = [] if splits else not_pulled(loc)  # a folder filled by `avdata pull --split`: the others
    names = [n for n in names if n not in absent]
    require_shards(loc, names)  # one asked for and not pulled, or a shard gone: named, not a bare OSError
    classes = list(m.classes)
    out: dict[str, Any] = {
        "location": loc.shown,
        "dataset": m.dataset,
        "tool": m.tool,
        "schema_version": m.schema_version,
        "options": m.options,
        "classes": classes,
        "features": m.features,
        "sample_limit": sample,
        "splits": {},
        "not_pulled": absent,
    }
    to_read = {n: (m.splits[n].num_samples if sample is None else min(sample, m.splits[n].num_samples))
               for n in names}
    bar = make_progress("samples", disable=None if progress in (None, True) else True)
    with bar:
        task = bar.add_task("inspect", total=sum(to_read.values()))
        for name in names:
            bar.update(task, description=f"inspect {name}")
            out["splits"][name] = _summarize_split(loc, name, classes, sample, lambda: bar.advance(task))
    total_samples = sum(m.splits[n].num_samples for n in names)
    total_bytes = sum(out["splits"][n]["bytes"] for n in names)
    out["totals"] = {
        "num_samples": total_samples,
        "num_shards": sum(out["splits"][n]["num_shards"] for n in names),
        "bytes": total_bytes,
        "bytes_per_sample": round(total_bytes / total_samples, 1) if total_samples else 0,
        "samples_read": sum(out["splits"][n]["read"]["samples"] for n in names),
    }
    skipped = [s for s in m.skipped if not splits or s.get("split") in names]
    reasons = Counter(s.get("reason", "") for s in skipped)
    out["skipped"] = {
        "count": len(skipped),
        "by_split": dict(sorted(Counter(s.get("split", "") for s in skipped).items())),
        "reasons": [{"reason": r, "count": c} for r, c in sorted(reasons.items(), key=lambda rc: (-rc[1], rc[0]))],
    }
    return out


def _summarize_split(loc: ShardsLocation, name: str, classes: list[str], sample: int | None, tick) -> dict[str, Any]:
    entry = loc.manifest.splits[name]
    nbytes = sum(s.bytes for s in entry.shards)
    fields: dict[str, FieldStats] = {}
    read_counts: Counter[str] = Counter()
    durations: list[float] = []
    n = 0
    for _file, _key, sample_fields in iter_samples(loc, name, limit=sample):
        n += 1
        meta = None
        for field_name, data in group_jpeg_frames(sample_fields).items():
            stats = fields.setdefault(field_name, FieldStats(field_name))
            value = stats.add(data)
            if stats.kind == "json":
                meta = value
        label = label_of(sample_fields, meta if isinstance(meta, dict) else None)
        read_counts[classes[label] if label is not None and 0 <= label < len(classes) else "(unknown)"] += 1
        d = duration_of(meta)
        if d is not None:
            durations.append(d)
        tick()
    complete = n == entry.num_samples and sample is None
    read: dict[str, Any] = {
        "samples": n,
        "complete": complete,
        "class_counts": {c: read_counts.get(c, 0) for c in classes}
                        | ({"(unknown)": read_counts["(unknown)"]} if read_counts.get("(unknown)") else {}),
        "fields": {f: s.to_dict(n) for f, s in fields.items()},
        "durations": _durations(durations),
    }
    if sample is None:
        read["matches_manifest"] = (n == entry.num_samples
                                    and all(read["class_counts"].get(c, 0) == entry.class_counts.get(c, 0)
                                            for c in classes))
    return {
        "num_samples": entry.num_samples,
        "class_counts": dict(entry.class_counts),
        "num_shards": len(entry.shards),
        "bytes": nbytes,
        "bytes_per_sample": round(nbytes / entry.num_samples, 1) if entry.num_samples else 0,
        "read": read,
    }


# --- printing ----------------------------------------------------------------------------------------


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def _fmt_shape(lo: list[int] | None, hi: list[int] | None) -> str:
    if lo is None or hi is None:
        return ""
    return "[" + ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in zip(lo, hi)) + "]"


def _fmt_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _text(value: Any, limit: int = 200) -> str:
    """A string from the manifest or shards as shown: control characters escaped, no rich markup."""
    from rich.markup import escape

    return escape(printable(value, limit))


def print_shards_summary(summary: dict[str, Any], console=None) -> None:
    """Render `summarize()`'s result as rich tables."""
    from rich.console import Console
    from rich.table import Table, box

    from avdata.class_counts_table import class_counts_table

    console = console or Console()
    s = summary
    tool = s["tool"]
    console.print(f"[bold]{_text(s['dataset'])}[/] at {_text(s['location'])}  (made by "
                  f"{_text(tool.get('name', '?'))} {_text(tool.get('version', '?'))}, manifest schema "
                  f"{s['schema_version']})", highlight=False, soft_wrap=True)
    if s.get("not_pulled"):
        console.print(f"split(s) {', '.join(s['not_pulled'])} not pulled (avdata pull --split), not read",
                      highlight=False, soft_wrap=True)
    if s["options"]:
        console.print("options: " + _text(", ".join(f"{k}={v}" for k, v in sorted(s["options"].items())), 2000),
                      highlight=False, soft_wrap=True)

    classes = s["classes"]
    sizes = Table(title="samples, shards and bytes per split (manifest)")
    for col in ("split", "samples", "shards", "bytes", "bytes/sample"):
        sizes.add_column(col, justify="left" if col == "split" else "right", no_wrap=True)
    for name, sp in s["splits"].items():
        sizes.add_row(name, str(sp["num_samples"]), str(sp["num_shards"]), human_bytes(sp["bytes"]),
                      human_bytes(sp["bytes_per_sample"]))
    t = s["totals"]
    sizes.add_row("[bold]total[/]", str(t["num_samples"]), str(t["num_shards"]), human_bytes(t["bytes"]),
                  human_bytes(t["bytes_per_sample"]))
    console.print(sizes)
    console.print(class_counts_table("samples per split and class (manifest)", classes,
                                     {name: sp["class_counts"] for name, sp in s["splits"].items()},
                                     {name: sp["num_samples"] for name, sp in s["splits"].items()}))

    for name, sp in s["splits"].items():
        read = sp["read"]
        how = "all samples" if s["sample_limit"] is None else f"first {read['samples']} sample(s)"
        table = Table(title=f"{name}: fields read back ({how}); size: mean bytes per sample", box=box.SIMPLE_HEAD,
                      show_edge=False, pad_edge=False, collapse_padding=True)  # fits 80 columns; values may wrap
        for col in ("field", "dtype", "shape", "values", "size", "present"):
            table.add_column(col, justify="right" if col in ("size", "present") else "left", no_wrap=col != "values")
        for fname, f in read["fields"].items():
            dtype = f.get("dtype", f["kind"])
            shape = _fmt_shape(f.get("shape_min"), f.get("shape_max"))
            if f.get("ndim_varies"):
                shape += " (ndim varies)"
            values = ""
            if f.get("value_min") is not None:
                values = f"{_fmt_value(f['value_min'])} .. {_fmt_value(f['value_max'])}"
            if f.get("nonfinite"):
                values += f" [red]({f['nonfinite']} NaN/inf)[/]"
            if f.get("errors"):
                values += f" [red]({f['errors']} undecodable)[/]"
            table.add_row(_text(fname), _text(dtype), shape, values, human_bytes(f["mean_bytes"]),
                          f"{f['count']}/{read['samples']}")
        console.print(table)
        if read.get("matches_manifest") is False:
            console.print(f"[red]{name}: read back {read['samples']} samples with class counts "
                          f"{_text(read['class_counts'], 2000)}, the manifest says {sp['num_samples']} with "
                          f"{_text(sp['class_counts'], 2000)}[/]", highlight=False)

    dur = [(name, sp["read"]["durations"]) for name, sp in s["splits"].items() if sp["read"]["durations"]]
    if dur:
        table = Table(title="audio durations (from the json field)")
        for col in ("split", "clips", "total", "mean", "min", "max"):
            table.add_column(col, justify="left" if col == "split" else "right")
        for name, d in dur:
            table.add_row(name, str(d["count"]), f"{d['total_s'] / 3600:.2f} h" if d["total_s"] >= 3600
                          else f"{d['total_s']:.1f} s", f"{d['mean_s']:.2f} s", f"{d['min_s']:.2f} s",
                          f"{d['max_s']:.2f} s")
        console.print(table)

    sk = s["skipped"]
    if sk["count"]:
        table = Table(title=f"{sk['count']} source clip(s) skipped while preparing (manifest)")
        table.add_column("reason")
        table.add_column("clips", justify="right")
        for r in sk["reasons"][:20]:
            table.add_row(_text(r["reason"]), str(r["count"]))
        if len(sk["reasons"]) > 20:
            table.add_row(f"... {len(sk['reasons']) - 20} more reasons", "")
        console.print(table)
    else:
        console.print("no source clips were skipped")

