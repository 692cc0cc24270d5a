"""The one way text from a shard or a manifest (sample keys, member names, class names, skip reasons)
reaches a terminal or a message: control characters escaped, length bounded.

Shards and manifests come from other people; an ESC sequence in a sample key could otherwise move the
cursor, recolour or rewrite what `avdata verify` or the trainer prints, and a newline could forge a line.
"""

from __future__ import annotations

import unicodedata

__all__ = ["printable"]

#: Unicode categories that are not shown as themselves: controls (C0, DEL, C1), format characters
#: (bidirectional overrides, zero-width), line and paragraph separators, surrogates.
_HIDDEN = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object, limit: int = 200) -> str:
    """`text` (made a str) with every hidden character written as a Python escape, cut to `limit`
    characters with "..." when longer."""
    text = str(text)
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isascii() and text.isprintable():
        return text
    return "".join(_escape(ch) if unicodedata.category(ch) in _HIDDEN else ch for ch in text)
