"""The file name extensions of the photos photosearch reads (imaging.py's decoders): what a scan picks up.

Apart from imaging.py, so that the scanner (and what imports it: the library, for a search too) needs no PIL.
"""

from __future__ import annotations

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp", ".heic", ".heif", ".hif"}
)
