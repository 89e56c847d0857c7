"""The query vector of a combined query: positive texts and example images added, negative texts subtracted,
each part normalised first and scaled by its weight, and the sum normalised again:

    q = normalise( Σ wᵢ·t̂ᵢ + Σ wⱼ·îⱼ - Σ wₙ·n̂ₙ )

Normalising each part first keeps one part from dominating by its length (a text and an image vector of CLIP
differ in norm before the model's own normalisation), so a weight means what it says: "2:sunset beach" counts
twice as much as a part of weight 1. Cosine scores against the normalised q rank the photos. A negative text
pushes q away from what it describes; one that cancels the positives entirely (the same text both ways) leaves
no direction, which is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from photosearch.errors import InvalidQueryError


def normalised(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm < 1e-6:
        raise InvalidQueryError("the query has no direction: its negative parts cancel its positive ones")
    return (vector / norm).astype(np.float32)


def compose(
    positives: Sequence[tuple[np.ndarray, float]], negatives: Sequence[tuple[np.ndarray, float]] = ()
) -> np.ndarray:
    """q from (vector, weight) parts, as the module docstring says."""
    if not positives:
        raise InvalidQueryError("a query needs a text or an example image")
    total = np.zeros_like(np.asarray(positives[0][0], dtype=np.float64))
    for vector, weight in positives:
        total += weight * normalised(np.asarray(vector, dtype=np.float64))
    for vector, weight in negatives:
        total -= weight * normalised(np.asarray(vector, dtype=np.float64))
    return normalised(total)
