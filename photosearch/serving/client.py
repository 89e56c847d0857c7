"""A small client for a running `photosearch serve`, used by the CLI so a search needs no model load.

Standard library only (urllib): importing it costs ~40 ms, against seconds for the query layer it saves loading.
The discovery of a running server is serving/discovery.py's.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from photosearch import errors
from photosearch.errors import (
    ImageError,
    InvalidQueryError,
    ModelError,
    PhotoNotFoundError,
    PhotosearchError,
)
from photosearch.pathtext import display
from photosearch.serving.webguard import CSRF_HEADER

_BY_STATUS: dict[int, type[PhotosearchError]] = {
    404: PhotoNotFoundError, 409: ModelError, 413: InvalidQueryError, 422: InvalidQueryError, 503: ModelError,
}  # fmt: skip


class ServerClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def get(self, endpoint: str, **params: Any) -> Any:
        """GET with query parameters; a list value repeats its parameter."""
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None}, doseq=True)
        return self._send(urllib.request.Request(f"{self.url}{endpoint}?{query}"))

    def post_json(self, endpoint: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(f"{self.url}{endpoint}", data=json.dumps(body).encode(), method="POST")
        request.add_header("Content-Type", "application/json")
        return self._send(request)

    def delete(self, endpoint: str) -> Any:
        return self._send(urllib.request.Request(f"{self.url}{endpoint}", method="DELETE"))

    def post_file(self, endpoint: str, file: Path, **params: Any) -> Any:
        boundary = uuid.uuid4().hex
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise ImageError(str(file), f"cannot read file: {exc.strerror or exc}") from None
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{_header_safe(file.name)}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        request = urllib.request.Request(f"{self.url}{endpoint}?{query}", data=body, method="POST")
        request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
        return self._send(request)

    def _send(self, request: urllib.request.Request) -> Any:
        request.add_header(CSRF_HEADER, "1")  # the server refuses POSTs without it (webguard.py): no form can send it
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise _error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            raise PhotosearchError(f"cannot reach the photosearch server at {self.url}: {exc}") from None


def _header_safe(name: str) -> str:
    """A file name fit for a multipart header (it only names the upload in error messages)."""
    return display(name).replace('"', "'")


def _error(exc: urllib.error.HTTPError) -> PhotosearchError:
    """The server's typed error again (its JSON names the class), so the CLI exits as if it ran locally."""
    try:
        body = json.loads(exc.read())
        detail, kind = body.get("detail", exc.reason), getattr(errors, str(body.get("error")), None)
    except (ValueError, AttributeError):
        detail, kind = exc.reason, None
    if exc.code == 415:
        return ImageError("upload", str(detail))
    if isinstance(kind, type) and issubclass(kind, PhotosearchError):
        try:
            return kind(f"server: {detail}")
        except TypeError:  # an error built from other arguments than a message: fall back to its status
            pass
    return _BY_STATUS.get(exc.code, PhotosearchError)(f"server: {detail}")
