"""The first text search of a process: the text tower loads in a thread while Chroma is imported and opened.
ONNX Runtime builds its session without the GIL, which cuts ~0.25 s of a ~2 s cold search."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


def load_side_by_side(text_encoder: Callable[[], object], store: Callable[[], object]) -> None:
    """Run both loaders, ``text_encoder`` in a thread; what either raises is raised here (the store's first)."""
    with ThreadPoolExecutor(1, thread_name_prefix="load-text") as pool:
        encoder = pool.submit(text_encoder)
        store()
        encoder.result()
