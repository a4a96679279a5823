"""Candidate retrieval for catalogues too large to score in full per request.

For one state ``s`` and a product ``a`` that no item of the state's history
neighbours, the Q-value is linear in what the product stores::

    Q(s, a) = <state(s), item(a)> + bias(a) + g_c(s) * unreached(a)

(``unreached`` is the co-occurrence head of a product with no kNN evidence,
which depends on popularity alone; see ``QNetwork``). So the products with the
best such values are the answer to a maximum-inner-product search of the query
``(state(s), 1, g_c(s))`` among the vectors ``(item(a), bias(a),
unreached(a))``. The products a history item neighbours, and the history items
themselves (with their repeat part), are scored exactly on top of those: the
true best products are always among the candidates, up to the index's recall.

The index is faiss's inverted file of full vectors (``IndexIVFFlat``) under the
inner product: the values it returns are exact, only which products it visits
is approximate. ``probes`` of the ``lists`` are read per query.
"""

import logging
import math
import time
from dataclasses import dataclass

import faiss
import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CandidateSearch:
    """When and how serving scores only retrieved candidates."""

    min_items: int = 250_000
    """Catalogues of at least this many products are served from candidates;
    smaller ones are scored in full, which is exact and fast enough."""
    candidates: int = 1_000
    """Products the index returns per request, before the neighbours and the
    history items are added; at least the exploration pool (200) is needed."""
    lists_per_sqrt_items: float = 4.0
    """Inverted lists: this many times the square root of the catalogue size."""
    probes: int = 48
    """Lists read per query; more raise recall and cost."""
    training_points_per_list: int = 40
    """Products sampled per list to train the coarse quantizer."""
    seed: int = 7
    """Seed of the training sample and of faiss's k-means."""


class CandidateIndex:
    """Maximum-inner-product search over a fixed (products x width) matrix."""

    def __init__(self, vectors: np.ndarray, search: CandidateSearch) -> None:
        started = time.perf_counter()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n_items, width = vectors.shape
        lists = max(
            1, min(n_items, round(search.lists_per_sqrt_items * math.sqrt(n_items)))
        )
        quantizer = faiss.IndexFlatIP(width)
        index = faiss.IndexIVFFlat(quantizer, width, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = search.seed
        index.cp.max_points_per_centroid = search.training_points_per_list
        sample = np.random.default_rng(search.seed).choice(
            n_items,
            size=min(n_items, lists * search.training_points_per_list),
            replace=False,
        )
        index.train(vectors[np.sort(sample)])
        index.add(vectors)
        index.nprobe = min(search.probes, lists)
        self.index = index
        self.width = width
        self.candidates = search.candidates
        self.build_seconds = time.perf_counter() - started
        logger.info(
            "Built a candidate index over %d products (%d lists) in %.1f s",
            n_items,
            lists,
            self.build_seconds,
            extra={"items": n_items, "lists": lists},
        )

    def search(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the (indexes, inner products) of the best candidates, best first."""
        values, found = self.index.search(
            np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.width),
            self.candidates,
        )
        keep = found[0] >= 0
        return found[0][keep], values[0][keep]

    def nbytes(self) -> int:
        """Return the memory the stored vectors and the lists' ids take."""
        return int(self.index.ntotal) * (self.width * 4 + 8)
