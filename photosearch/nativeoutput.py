"""What C libraries print on the process's stderr (libtiff, libjpeg, libheif warnings) goes to the log instead.

Decoders written in C complain straight onto file descriptor 2 ("TIFFFillStrip: Invalid strip byte count",
"WEBP compression support is not configured"), dozens of lines on a corrupt library, right through the
progress bar. Python-level redirection cannot catch that, so ``native_output_to_log`` points fd 2 itself at a
pipe whose lines a thread forwards to a logger, while Python's own ``sys.stderr`` (the progress bar, error
messages, a terminal log handler) writes to a duplicate of the original fd 2, the real terminal.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TextIO

log = logging.getLogger(__name__)
_PREFIX = "decoder output: "
# How long the exit waits for the last lines: a child process that inherited the pipe would keep it open.
_JOIN_SECONDS = 5.0


@contextmanager
def native_output_to_log() -> Iterator[None]:
    """While inside, what anything writes to fd 2 is logged (warning level, one record per line, this module's
    logger: under "photosearch", so its handlers get them).

    Everything is restored on the way out, also on exceptions and Ctrl-C, and the lines still in the pipe are
    logged first. Where fd 2 cannot be moved (closed, say), this does nothing.
    """
    try:
        terminal = os.dup(2)
    except OSError:
        yield
        return
    read_end, write_end = os.pipe()
    _flush_python_stderr()
    previous = sys.stderr
    ours = _python_stderr_on(terminal)
    os.dup2(write_end, 2)
    os.close(write_end)  # fd 2 is now the only write end: restoring it closes the pipe, which ends the reader
    reader = threading.Thread(target=_forward, args=(read_end,), name="native-stderr", daemon=True)
    reader.start()
    try:
        yield
    finally:
        if ours is not None:
            sys.stderr = previous
            # Closed, so that whatever still holds it (a log handler) fails loudly instead of writing to
            # whatever file reuses the descriptor number below.
            ours.close()
        os.dup2(terminal, 2)
        os.close(terminal)
        reader.join(_JOIN_SECONDS)
        if reader.is_alive():  # another process inherited fd 2 and still holds the pipe: its later lines are lost
            log.info("decoder output: a child process still holds the pipe; not waiting for it")


def _python_stderr_on(terminal: int) -> TextIO | None:
    """Point sys.stderr at the saved terminal when it writes to fd 2; returns the new stream, if it did.

    A sys.stderr on another file (a test runner's capture, say) never reached fd 2 and is left as it is.
    """
    try:
        if sys.stderr.fileno() != 2:
            return None
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: no file behind it
        return None
    # Written through at once, as Python's own stderr is, so tqdm's "\r" updates appear when drawn.
    raw = io.FileIO(terminal, "w", closefd=False)
    sys.stderr = io.TextIOWrapper(raw, encoding=sys.stderr.encoding, errors=sys.stderr.errors, line_buffering=True,
                                  write_through=True)  # fmt: skip
    return sys.stderr


def _flush_python_stderr() -> None:
    with suppress(AttributeError, OSError, ValueError):  # nothing buffered can be lost where there is no stream
        sys.stderr.flush()


def _forward(read_end: int) -> None:
    """Log each line read from the pipe until every write end is closed, then a last unterminated one."""
    pending = b""
    try:
        while chunk := os.read(read_end, 65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                _log_line(line)
    except OSError as exc:
        # The descriptor was closed under us (code that closed a number twice): not ours to close again, as the
        # number may belong to another file by now. Said in the log, which is where the lines were going.
        log.warning("decoder output is no longer read (%s): what C libraries print now is lost", exc)
        return
    _log_line(pending)
    os.close(read_end)


def _log_line(line: bytes) -> None:
    text = line.decode("utf-8", errors="backslashreplace").rstrip()
    # A line carrying the prefix is one of these records, written back onto fd 2 by a handler still bound to
    # it: logging it again would loop forever. Another handler has it already.
    if text and _PREFIX not in text:
        log.warning("%s%s", _PREFIX, text)


class StderrHandler(logging.StreamHandler[TextIO]):
    """A log handler on whatever ``sys.stderr`` is when a record is written, as logging's last resort is.

    A plain StreamHandler keeps the stream it was made with, and Python's original stderr writes to fd 2: inside
    ``native_output_to_log`` its lines would go into the pipe (and so into the log) instead of the terminal.
    """

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass  # StreamHandler.__init__ and setStream assign it; the current sys.stderr is always used
