"""Scores of many vectors against one, on one BLAS thread.

Why one: OpenBLAS splits a matrix-vector product over its threads, and its threads then spin, waiting for more
work, for a while after it ends. The next query's text encoder (onnxruntime, on the same 2 cores) ran 2x slower
behind them: 18 ms alone, ~35 ms right after scoring 10,000 vectors on two threads, ~19 ms after one thread.
The product is bound by memory bandwidth, so a second thread gains it little. The BLAS library is found once,
on first use (threadpoolctl); the limit holds only during the product, for the whole process.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

import numpy as np

_lock = threading.Lock()  # one limit at a time: nested limits restore the thread count in the wrong order


@cache
def _controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def scores(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """``matrix @ vector`` (rows x dim by dim), computed on one BLAS thread."""
    with _lock, _controller().limit(limits=1, user_api="blas"):
        return np.asarray(matrix @ vector)
