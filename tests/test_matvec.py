"""matvec.scores: the product, on one BLAS thread while it runs, the process's own thread count after."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info

from photosearch import matvec


def _blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_scores_are_the_product_and_the_thread_count_comes_back():
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((3000, 64)).astype(np.float32)
    vector = rng.standard_normal(64).astype(np.float32)
    before = _blas_threads()
    assert before  # numpy's BLAS is found: the limit has something to hold
    got = matvec.scores(matrix, vector)
    assert got.shape == (3000,) and np.allclose(got, matrix.astype(np.float64) @ vector, atol=1e-3)
    assert _blas_threads() == before


def test_the_limit_holds_during_the_product():
    seen: list[list[int]] = []

    class Watched(np.ndarray):
        def __matmul__(self, other: object) -> np.ndarray:
            seen.append(_blas_threads())
            return np.asarray(self).__matmul__(other)

    matvec.scores(np.ones((4, 2), dtype=np.float32).view(Watched), np.ones(2, dtype=np.float32))
    assert seen == [[1] * len(_blas_threads())]
