"""What the watch daemon keeps in the catalog for `photosearch status`: when it started, its last error, and
how much was indexed lately. Stored as catalog meta keys (JSON values), so any process can read them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from photosearch.stores.catalog import Catalog

STARTED_KEY = "daemon"
ERROR_KEY = "daemon_last_error"


@dataclass(frozen=True)
class DaemonError:
    at: datetime
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"at": self.at.isoformat(), "message": self.message}


class DaemonRecord:
    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def set_started(self, since: datetime) -> None:
        self._catalog.set_meta({STARTED_KEY: json.dumps({"since": since.isoformat()})})

    def record_error(self, at: datetime, message: str) -> None:
        self._catalog.set_meta({ERROR_KEY: json.dumps({"at": at.isoformat(), "message": message})})

    def clear_error(self) -> None:
        self._catalog.set_meta({ERROR_KEY: None})

    def last_error(self) -> DaemonError | None:
        raw = self._catalog.get_meta(ERROR_KEY)
        if not raw:
            return None
        fields = json.loads(raw)
        return DaemonError(datetime.fromisoformat(fields["at"]), str(fields["message"]))

    def indexed_since(self, since: datetime) -> int:
        """Photos indexed since then, by the daemon or any other writer."""
        return self._catalog.indexed_since(since)
