"""bench_query.py's measurement of a freshly started `photosearch serve` (the real console script, --no-watch):
the seconds until its page answers (GET /api/status), then the first text search asked right then (GET
/api/search, with the page's auto cutoff), then a second one; the median of --cold-runs starts. The servers
(--backend servers) are named in the environment, as a user would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _once(cmd: list[str], env: dict[str, str], texts: list[str]) -> tuple[float, float, float]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    proc = subprocess.Popen([*cmd, "serve", "--no-watch", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status", timeout=60).read()
                break
            except OSError:
                if proc.poll() is not None:
                    sys.exit(f"`{' '.join(cmd)} serve` exited ({proc.returncode})")
                time.sleep(0.02)
        answered = time.monotonic()
        times = []
        for text in texts[:2]:
            t0 = time.monotonic()
            urllib.request.urlopen(f"{base}/api/search?" + urllib.parse.urlencode({"q": text, "cutoff": "auto"}),
                                   timeout=120).read()  # fmt: skip
            times.append(time.monotonic() - t0)
        return answered - started, times[0], times[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def cli(config: Any) -> tuple[list[str], dict[str, str]]:
    """The console script with this library's data directory and model, and an environment that names its
    store servers the way a user would (PHOTOSEARCH_STORE_*), none of the shell's other PHOTOSEARCH_*."""
    exe = Path(sys.executable).with_name("photosearch")
    cmd = [str(exe), "--data-dir", str(config.data_dir), "--model", config.model.name]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSEARCH_")}
    for key in ("catalog", "vectors", "database"):
        value = getattr(config.store, key)
        if value is not None and (key != "database" or config.store.vectors is not None):
            env[f"PHOTOSEARCH_STORE_{key.upper()}"] = str(value)
    return cmd, env


def measure(config: Any, texts: list[str], runs: int) -> dict[str, float]:
    cmd, env = cli(config)
    page, first, second = np.median([_once(cmd, env, texts) for _ in range(runs)], axis=0)
    return {"serve_page_s": float(page), "serve_first_query_s": float(first), "serve_second_query_s": float(second)}
