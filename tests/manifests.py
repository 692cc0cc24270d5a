"""The manifest a test folder holds, read through the typed reader (`Manifest.load`, which checks it) and
returned as the plain JSON object, for assertions on exactly what manifest.json says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avdata.shards.manifest import Manifest


def load_manifest(path: str | Path) -> dict[str, Any]:
    return Manifest.load(path).to_dict()
