"""How the CLI finds a running `photosearch serve` for its data directory: the file the server writes while it runs.

Apart from the client (urllib's HTTP stack costs ~40 ms to import), so that a CLI command with no server to ask
pays only for reading one small file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DISCOVERY = "server.json"  # written by `photosearch serve` into the data directory while it runs


def running_server(data_dir: Path) -> dict[str, Any] | None:
    """The server for this data directory, if one runs (its discovery file names a live process)."""
    try:
        data: dict[str, Any] = json.loads((data_dir / DISCOVERY).read_text())
        os.kill(int(data["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return data
