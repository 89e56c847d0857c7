"""What C libraries print on file descriptor 2 goes to the log, and the terminal keeps only our own output."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Run in a fresh interpreter: the context manager moves the process's fd 2, which pytest's capture owns here.
_SCRIPT = """
import logging, os, sys
from photosearch.nativeoutput import native_output_to_log

logging.basicConfig(filename=sys.argv[1], level=logging.INFO, format="%(levelname)s %(message)s")
print("before", file=sys.stderr, flush=True)
try:
    with native_output_to_log():
        os.write(2, b"TIFFFillStrip: Invalid strip byte count 0, strip 0.\\nlibheif: two lines\\n")
        print("python's own stderr", file=sys.stderr)
        os.write(2, b"a last line without its newline")
        if sys.argv[2] == "raise":
            raise KeyboardInterrupt
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
os.write(2, b"after, on fd 2\\n")
"""


@pytest.mark.parametrize("ending", ["normal", "raise"])
def test_fd2_output_is_logged_while_python_keeps_the_terminal(tmp_path, ending):
    log = tmp_path / "out.log"
    result = subprocess.run([sys.executable, "-c", _SCRIPT, str(log), ending], cwd=REPO, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = ["before", "python's own stderr", *(["interrupted"] if ending == "raise" else []), "after, on fd 2"]
    assert result.stderr.splitlines() == expected  # restored afterwards, also after an exception
    assert log.read_text().splitlines() == [
        "WARNING decoder output: TIFFFillStrip: Invalid strip byte count 0, strip 0.",
        "WARNING decoder output: libheif: two lines",
        "WARNING decoder output: a last line without its newline",  # not lost at exit
    ]


def _with_tag(data: bytes, tag: int, value: int) -> bytes:
    """A copy of a TIFF with the first value of one SHORT or LONG tag of its first IFD replaced."""
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        number, kind, n = struct.unpack(order + "HHI", data[entry : entry + 8])
        if number == tag:
            fmt = order + ("H" if kind == 3 else "I")
            size = struct.calcsize(fmt)
            at = entry + 8 if n * size <= 4 else struct.unpack(order + "I", data[entry + 8 : entry + 12])[0]
            return data[:at] + struct.pack(fmt, value) + data[at + size :]
    raise KeyError(tag)


def _broken_tiffs(folder: Path, exif_samples: Path) -> None:
    """Real TIFFs of the samples, each broken so that libtiff prints its own complaint on fd 2."""
    folder.mkdir()
    data = (exif_samples / "tiff" / "Picoawards.tiff").read_bytes()
    (folder / "zero-strip.tiff").write_bytes(_with_tag(data, 279, 0))  # StripByteCounts 0
    (folder / "webp.tiff").write_bytes(_with_tag(data, 259, 50001))  # Compression: WebP (not in this libtiff)
    (folder / "lzma.tiff").write_bytes(_with_tag(data, 259, 34925))  # Compression: LZMA, but LZW data
    (folder / "cut.tiff").write_bytes(data[:3000])  # a Python-level warning from PIL: "Corrupt EXIF data"


def _read_all(fd: int, into: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed its end of the terminal
            return
        if not chunk:
            return
        into.append(chunk)


def test_index_keeps_decoder_warnings_off_the_terminal(tmp_path, tiny_model_dir, exif_samples):
    """`photosearch index` on a terminal: the progress bar and the summary there, libtiff's lines in the log."""
    broken = tmp_path / "broken"
    _broken_tiffs(broken, exif_samples)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEARCH_")}
    env |= {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HF_HOME": str(tmp_path / "hf")}
    cmd = [sys.executable, "-m", "photosearch", "--data-dir", str(tmp_path / "data"), "--model", str(tiny_model_dir),
           "index", str(exif_samples), str(broken)]  # fmt: skip
    master, slave = pty.openpty()  # stderr a terminal, as a user has it: tqdm draws its bar only there
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    chunks: list[bytes] = []
    reader = threading.Thread(target=_read_all, args=(master, chunks))
    reader.start()
    try:
        result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=slave, cwd=REPO, env=env, timeout=600)
    finally:
        os.close(slave)
        reader.join(timeout=30)
        os.close(master)
    terminal = b"".join(chunks).decode(errors="replace")
    assert result.returncode == 0, terminal
    summary = result.stdout.decode()
    assert re.match(r"\d+ new, 0 changed, 0 unchanged, 0 moved, 0 removed, 4 failed \(", summary), summary
    assert "100%|" in terminal and "photo/s]" in terminal, terminal  # tqdm's bar, through the saved terminal
    for decoder_text in ("TIFF", "WEBP", "LZMA", "decoder output", "EXIF", "Warning"):
        assert decoder_text not in terminal, terminal
    log = (tmp_path / "data" / "logs" / "photosearch.log").read_text()
    # libtiff writes a complaint's module name and its message as two writes: two decode threads failing at once
    # interleave them ("TIFFFillStrip: LZMADecode: ..." then "Invalid strip byte count 0"). Each part arrives.
    assert "decoder output: " in log and "TIFFFillStrip" in log, (log, terminal)
    assert "Invalid strip byte count 0" in log, (log, terminal)
    assert "WEBP compression support is not configured" in log, log
    assert f"failed: {broken / 'webp.tiff'}: " in log, log  # the file's own reason, in the same log
    assert "WARNING py.warnings: " in log and "UserWarning: Corrupt EXIF data" in log, log
