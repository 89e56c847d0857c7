"""File names as text: stored losslessly, shown safely.

On Linux a file name is bytes. Python hands a name that is not valid UTF-8 over as a str holding lone
surrogates (U+DC80-U+DCFF, PEP 383), which neither SQLite, PostgreSQL nor Chroma can store, and no UTF-8
terminal or JSON encoder can print. Two mappings deal with that, each in one place:

- ``to_text`` / ``from_text``: the stored form. Each undecodable byte 0xNN becomes the private-use character
  U+10FFNN (Supplementary Private Use Area-B), so any name round-trips through a text column. The mapping is
  char by char (``/`` stays ``/``, one byte stays one character): prefixes, folder splits and lengths mean the
  same on both sides, and every valid UTF-8 name, i.e. every catalog written before, is stored unchanged. A name
  that really contains one of those 128 private-use characters has that character's UTF-8 bytes escaped too, so
  even it comes back exactly.
- ``display``: what a person (or a JSON consumer) sees. Undecodable bytes as ``\\xNN``, control characters
  (newline, tab, ...) and invisible format characters (the right-to-left override that makes ``gpj.exe`` look
  like ``exe.jpg``) as escapes; everything printable, right-to-left scripts included, as it is.
"""

from __future__ import annotations

import os
import re
import unicodedata

_BASE = 0x10FF00  # byte 0xNN <-> U+10FFNN (only 0x80-0xFF ever occur: ASCII always decodes)
_ESCAPED = re.compile("[\U0010ff80-\U0010ffff]+")
_TO_ESCAPE = re.compile("[\udc80-\udcff\U0010ff80-\U0010ffff]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
_JOINERS = frozenset("\u200c\u200d")  # Cf, but part of emoji and Indic spellings: shown, not escaped


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if "\udc80" <= char <= "\udcff":
        return chr(_BASE + ord(char) - 0xDC00)
    return "".join(chr(_BASE + byte) for byte in char.encode())  # a real U+10FF80-U+10FFFF character


def to_text(path: str | os.PathLike[str]) -> str:
    """The stored form of a path or name: valid Unicode whatever bytes the name holds."""
    text = os.fspath(path)
    return text if text.isascii() else _TO_ESCAPE.sub(_escape_char, text)


def from_text(text: str) -> str:
    """The path again, exactly as the OS gave it (the inverse of ``to_text``)."""
    if text.isascii() or not _ESCAPED.search(text):
        return text
    parts: list[bytes] = []
    last = 0
    for match in _ESCAPED.finditer(text):
        parts.append(text[last : match.start()].encode())
        parts.append(bytes(ord(c) - _BASE for c in match.group()))
        last = match.end()
    parts.append(text[last:].encode())
    return os.fsdecode(b"".join(parts))


def _shown(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"  # the undecodable byte itself
    if char in _JOINERS or unicodedata.category(char) not in ("Cc", "Cf", "Cs", "Zl", "Zp", "Co"):
        return char
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def display(path: str | os.PathLike[str]) -> str:
    """A path as a person should see it: printable, one line, invisible tricks made visible."""
    text = os.fspath(path)
    if text.isprintable():
        return text
    return "".join(_shown(c) for c in text)
