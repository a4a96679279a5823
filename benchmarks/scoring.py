"""Time the serving path's scoring on a synthetic catalogue of a million products.

Run from the project root: ``nice .venv/bin/python benchmarks/scoring.py``. It
needs neither the database nor the text encoder, and takes a few minutes and
about 8 GB of memory. One request here is what serving does per slate to
score: ``DQNPolicy.q_values`` for one customer's encoded state (a Q-value for
every product, or for the retrieved candidates on a catalogue that has a
candidate index), then ``pick_slate`` (k=10, softmax among the 200 best
eligible products). Encoding the state and the database reads are not part of
it.

In one run it prints p50 / p99 over ``BENCH_REQUESTS`` requests (200) for:

- a synthetic catalogue of ``BENCH_ITEMS`` products (1,000,000): random
  MiniLM-sized (384) text vectors, random weights of the real dimensions, and
  co-occurrence neighbours from a million random baskets over a Zipf-like
  popularity, for customers with a few to sixty baskets each. It is served
  from candidates (``rl_engine.core.candidates``), then the same requests are
  scored in full; the recall of the full scan's best among the candidates,
  and how often the greedy top 10 agree, follow the table;
- the real Online Retail catalogue (bundled file): its baskets, neighbours,
  popularity and test-period customers, with random weights; next to it, the
  training pass ``QNetwork.forward``, which is what serving ran before;
- the floor, interleaved with the requests: a bare ``torch.mv`` (and numpy
  matrix-vector product) of the same (products x width) float32 item matrix.

Each figure is given as wall-clock time and as this process's CPU time, which
other work on the machine inflates less. Then the memory of the item matrix
and of what the policy holds, against the goal of 10 ms or less per request at
a million products. ``BENCH_THREADS`` sets torch's threads (1).
"""

import os

if os.environ.get("BENCH_THREADS", "1") != "0":
    # numpy's BLAS (the numpy floor) on as many threads as torch.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", os.environ.get("BENCH_THREADS", "1"))

import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import bootstrap
import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(bootstrap.ROOT))

from rl_engine.core.baselines import cosine_item_similarity
from rl_engine.core.config import TrainingConfig
from rl_engine.core.policy import DQNPolicy
from rl_engine.core.protocol import (
    BasketLog,
    ItemVocabulary,
    SplitBoundaries,
    build_baskets,
    build_cases,
    purchase_lines,
    read_online_retail,
)
from rl_engine.core.qnetwork import QNetwork, top_neighbours
from rl_engine.core.serving import pick_slate
from rl_engine.core.states import (
    PopularityTable,
    StateBatch,
    encode_states,
    popularity_table,
)
from rl_engine.core.trainer import to_tensors

ITEMS = int(os.environ.get("BENCH_ITEMS", "1000000"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "200"))
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
"""Torch threads: one, as a serving worker per core runs; 0 keeps torch's
default of one per core, which on a busy machine spins and waits."""
GOAL_MS = 10.0
RECALL_STATES = 100
"""Requests whose candidates are compared with the full scan's best."""
TEXT_WIDTH = 384
"""Width of MiniLM-L6's sentence vectors, the text encoder's output."""
ELIGIBLE_SHARE = 0.97
"""Products left after stock, activity and governance rules."""
NOW = np.datetime64("2011-12-01T00:00:00", "s")
REAL_FIT_BEFORE = np.datetime64("2011-10-01")
MIB = 1 << 20

T = TypeVar("T")


STEPS = ("q_values", "pick_slate", "request", "floor torch.mv", "floor numpy")


@dataclass
class Samples:
    """Milliseconds of one step per request: wall clock and this process's CPU."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def time(self, step: Callable[[], T]) -> T:
        wall, cpu = time.perf_counter(), time.process_time()
        result = step()
        self.cpu.append((time.process_time() - cpu) * 1e3)
        self.wall.append((time.perf_counter() - wall) * 1e3)
        return result


def main() -> None:
    torch.set_grad_enabled(False)
    if THREADS:
        torch.set_num_threads(THREADS)
    rng = np.random.default_rng(2011)
    print(f"torch {torch.__version__} on the CPU, {torch.get_num_threads()} threads")

    started = time.perf_counter()
    policy, states = synthetic_policy(ITEMS, REQUESTS, rng)
    print(f"Built the synthetic policy in {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    candidates = policy.network.scoring_tables().candidates
    precompute_s = time.perf_counter() - started
    large = time_requests(policy, states, rng)
    memory = memory_figures(policy)
    served = [
        policy.q_values(states.take(np.array([index])), candidates=True)[0]
        for index in range(min(RECALL_STATES, len(states)))
    ]

    # The same requests scored in full, the exact reference.
    policy.network.candidate_search = None
    started = time.perf_counter()
    policy.network.scoring_tables()
    full_tables_s = time.perf_counter() - started
    full = time_requests(policy, states, rng)
    exact = policy.q_values(states.take(np.arange(len(served))))
    del policy, states

    real_policy, real_states = online_retail_policy(REQUESTS, rng)
    real = time_requests(real_policy, real_states, rng)
    before = Samples()
    for index in range(len(real_states)):
        tensors = to_tensors(real_states.take(np.array([index])), torch.device("cpu"))
        before.time(partial(real_policy.network, tensors))

    print()
    print(
        "One request: q_values for one customer's state, then pick_slate "
        "(k=10, softmax among the 200 best eligible)."
    )
    print(
        f"p50 / p99 in ms over {REQUESTS} requests, wall clock and this "
        "process's CPU time; the floors ran between the requests."
    )
    print()
    header = f"{'catalogue':<34}" + "".join(f"{step:>16}" for step in STEPS)
    print(header)
    print("-" * len(header))
    print(rows(f"{ITEMS:,} candidates", large))
    print(rows(f"{ITEMS:,} full scan", full))
    print(rows(f"{real_policy.network.n_items:,} Online Retail", real))
    print(rows("  before: QNetwork.forward", {"q_values": before}))
    print()

    wall = float(np.percentile(large["request"].wall, 50))
    cpu = float(np.percentile(large["request"].cpu, 50))
    verdict = "met" if wall <= GOAL_MS else "not met"
    print(
        f"Goal: {GOAL_MS:.0f} ms or less per request at {ITEMS:,} products: "
        f"p50 {wall:.1f} ms ({cpu:.1f} ms CPU), {verdict}."
    )
    floor = large["floor torch.mv"]
    print(
        "The bare matrix-vector product alone: p50 "
        f"{np.percentile(floor.wall, 50):.1f} ms "
        f"({np.percentile(floor.cpu, 50):.1f} ms CPU)."
    )
    print(
        f"Scoring tables built in {precompute_s:.1f} s with the candidate index "
        f"({candidates.build_seconds if candidates else 0.0:.1f} s of it), "
        f"{full_tables_s:.1f} s without; once (DQNPolicy.load builds them)."
    )
    print_recall(served, exact)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"Load average over 1, 5 and 15 minutes at the end: {load}.")
    print()
    print(f"Memory at {ITEMS:,} products")
    for name, value in memory.items():
        print(f"  {name:<44}{value}")


def print_recall(served: list[np.ndarray], exact: np.ndarray) -> None:
    """How much of the exact best the candidates hold, and whether slates agree."""
    scored = [np.isfinite(row) for row in served]
    print(
        f"Candidates over {len(served)} requests: "
        f"{np.mean([row.sum() for row in scored]):,.0f} products scored per request"
    )
    for k in (10, 200):
        recall = np.mean(
            [
                mask[np.argsort(-truth, kind="stable")[:k]].mean()
                for mask, truth in zip(scored, exact, strict=True)
            ]
        )
        print(f"  recall of the exact best {k}: {recall:.4f}")
    same = np.mean(
        [
            set(np.argsort(-row, kind="stable")[:10])
            == set(np.argsort(-truth, kind="stable")[:10])
            for row, truth in zip(served, exact, strict=True)
        ]
    )
    print(f"  greedy top 10 identical to the full scan's: {same:.1%} of requests")


def rows(name: str, timings: dict[str, Samples]) -> str:
    def cells(clock: str) -> str:
        return "".join(
            f"{percentiles(getattr(timings[step], clock)):>16}"
            if step in timings
            else f"{'':>16}"
            for step in STEPS
        )

    return f"{name:<28}{'wall':>6}{cells('wall')}\n{'':<28}{'CPU':>6}{cells('cpu')}"


def percentiles(values: list[float]) -> str:
    return f"{np.percentile(values, 50):.2f} / {np.percentile(values, 99):.2f}"


def time_requests(
    policy: DQNPolicy, states: StateBatch, rng: np.random.Generator
) -> dict[str, Samples]:
    """Serve every state once, timing each step, with the floors in between."""
    n_items = len(policy.item_ids)
    eligible = rng.random(n_items) < ELIGIBLE_SHARE
    items = policy.network.scoring_tables().items[:n_items]
    items_numpy = items.numpy()
    vector = torch.randn(items.shape[1])
    vector_numpy = vector.numpy()

    # One request and one of each floor first: caches, allocator, lazy tables.
    policy.q_values(states.take(np.array([0])), candidates=True)
    torch.mv(items, vector)
    timings = {step: Samples() for step in STEPS}
    for index in range(len(states)):
        state = states.take(np.array([index]))
        scores = timings["q_values"].time(
            partial(policy.q_values, state, candidates=True)
        )[0]
        timings["pick_slate"].time(
            partial(
                pick_slate,
                scores,
                eligible,
                10,
                kind="softmax",
                candidates=200,
                rng=rng,
            )
        )
        timings["floor torch.mv"].time(lambda: torch.mv(items, vector))
        timings["floor numpy"].time(lambda: items_numpy @ vector_numpy)
    for clock in ("wall", "cpu"):
        total = np.add(
            getattr(timings["q_values"], clock), getattr(timings["pick_slate"], clock)
        )
        setattr(timings["request"], clock, total.tolist())
    return timings


def memory_figures(policy: DQNPolicy) -> dict[str, str]:
    network = policy.network
    tables = network.scoring_tables()
    n_items = network.n_items
    items = tables.items
    network_bytes = sum(
        t.element_size() * t.nelement()
        for t in [*network.parameters(), *network.buffers()]
    )
    similarity_bytes = sum(
        t.element_size() * t.nelement()
        for t in (network.similarity_indices, network.similarity_values)
    )
    dense_bytes = 4 * n_items * n_items
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "item matrix (float32, contiguous)": (
            f"{items.nbytes / MIB:,.0f} MiB  ({items.shape[0]:,} x {items.shape[1]})"
        ),
        "scoring tables (items, similarity CSR, ...)": (
            f"{tables.nbytes() / MIB:,.0f} MiB"
        ),
        "network tensors (384-d text included)": f"{network_bytes / MIB:,.0f} MiB",
        "  of which the saved similarity (COO)": (
            f"{similarity_bytes / MIB:,.0f} MiB  "
            f"({network.similarity_values.numel():,} neighbour pairs)"
        ),
        "dense similarity (none built to serve now)": (
            f"{readable(dense_bytes)} would have been built at load"
        ),
        "peak resident memory of this process": f"{peak / MIB:,.0f} MiB",
    }


def readable(size: int) -> str:
    """Return a byte count in MiB, or in TiB past a thousand GiB."""
    return (
        f"{size / 2**40:,.1f} TiB" if size >= 1000 * 2**30 else f"{size / MIB:,.0f} MiB"
    )


def synthetic_policy(
    n_items: int, n_customers: int, rng: np.random.Generator
) -> tuple[DQNPolicy, StateBatch]:
    """Return a random policy over ``n_items`` products and one state per customer."""
    # Zipf-like popularity, the popular products spread over the catalogue.
    weights = 1.0 / (np.arange(n_items) + 10.0) ** 0.9
    cdf = np.cumsum(weights) / weights.sum()
    product_at_rank = rng.permutation(n_items)

    def draw(count: int) -> np.ndarray:
        ranks = np.minimum(np.searchsorted(cdf, rng.random(count)), n_items - 1)
        return product_at_rank[ranks]

    corpus = random_baskets(n_items, n_items, 10, draw, rng)
    started = time.perf_counter()
    similarity = top_per_row(
        cosine_item_similarity(corpus), TrainingConfig().policy.neighbours
    )
    print(
        f"  neighbours: {similarity.nnz:,} pairs from {corpus.shape[0]:,} random "
        f"baskets in {time.perf_counter() - started:.0f} s"
    )
    counts = np.asarray(corpus.sum(axis=0)).ravel().astype(np.float32)
    del corpus
    moments = NOW - np.arange(7, -1, -1) * np.timedelta64(7, "D")
    popularity = PopularityTable(
        moments=moments,
        counts=np.vstack([counts * rng.uniform(0.8, 1.2) for _ in moments]),
        recent=np.vstack([counts * rng.uniform(0.1, 0.4) for _ in moments]),
    )

    text = rng.standard_normal((n_items, TEXT_WIDTH), dtype=np.float32)
    text /= np.sqrt(np.einsum("ij,ij->i", text, text))[:, None]
    config = TrainingConfig()
    network = QNetwork(
        text_vectors=text,
        similarity=similarity,
        popularity=popularity.counts,
        config=config.policy,
        recent_popularity=popularity.recent,
    )
    del text, similarity
    randomise(network)
    ids = np.array([f"P{index:07d}" for index in range(n_items)], dtype=object)
    policy = DQNPolicy(
        network=network,
        item_ids=ids,
        popularity=popularity,
        config=config,
        fitted_before=NOW,
    )
    log, history = customer_log(ids, n_customers, draw, rng)
    states = policy.encode(log, history, np.full(n_customers, NOW))
    return policy, states


def random_baskets(
    n_baskets: int,
    n_items: int,
    mean_size: int,
    draw: Callable[[int], np.ndarray],
    rng: np.random.Generator,
) -> sp.csr_array:
    """Return a binary (baskets x items) matrix of popularity-drawn baskets."""
    sizes = 1 + rng.poisson(mean_size - 1, n_baskets)
    baskets = sp.csr_array(
        (
            np.ones(int(sizes.sum()), dtype=np.float32),
            (np.repeat(np.arange(n_baskets), sizes), draw(int(sizes.sum()))),
        ),
        shape=(n_baskets, n_items),
    )
    baskets.sum_duplicates()
    baskets.data[:] = 1.0
    return baskets


def top_per_row(similarity: sp.csr_array, k: int) -> sp.csr_array:
    """Keep each row's ``k`` largest entries, without a dense copy."""
    similarity = sp.csr_array(similarity, dtype=np.float32)
    keep = np.ones(similarity.nnz, dtype=bool)
    indptr, data = similarity.indptr, similarity.data
    for item in np.flatnonzero(np.diff(indptr) > k):
        start, end = indptr[item], indptr[item + 1]
        dropped = np.argpartition(data[start:end], end - start - k)[: end - start - k]
        keep[start + dropped] = False
    rows = np.repeat(np.arange(similarity.shape[0]), np.diff(indptr))
    return sp.csr_array(
        (data[keep], (rows[keep], similarity.indices[keep])), shape=similarity.shape
    )


def customer_log(
    ids: np.ndarray,
    n_customers: int,
    draw: Callable[[int], np.ndarray],
    rng: np.random.Generator,
) -> tuple[BasketLog, sp.csr_array]:
    """Return the customers' baskets, about half repeat buying, and their history.

    A customer has 1 to 60 baskets of about 20 products over the last year.
    """
    rows: list[np.ndarray] = []
    items: list[np.ndarray] = []
    times: list[np.datetime64] = []
    owners: list[int] = []
    for customer in range(n_customers):
        favourites = draw(40)
        n_baskets = min(1 + int(rng.geometric(0.1)), 60)
        ages = np.sort(rng.uniform(1, 365, n_baskets))[::-1]
        for age in ages:
            size = 1 + int(rng.poisson(19))
            repeats = rng.binomial(size, 0.5)
            basket = np.concatenate(
                [rng.choice(favourites, repeats), draw(size - repeats)]
            )
            rows.append(np.full(len(basket), len(times)))
            items.append(basket)
            times.append(NOW - np.timedelta64(int(age * 86400), "s"))
            owners.append(customer)
    order = np.argsort(np.array(times), kind="stable")
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    matrix = sp.csr_array(
        (
            np.ones(sum(len(b) for b in items)),
            (position[np.concatenate(rows)], np.concatenate(items)),
        ),
        shape=(len(times), len(ids)),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    owner = np.array(owners)[order]
    log = BasketLog(
        basket_ids=np.array([f"B{n}" for n in range(len(times))], dtype=object),
        customer_ids=owner.astype(str).astype(object),
        customer_codes=owner.astype(np.int64),
        times=np.array(times, dtype="datetime64[s]")[order],
        items=matrix,
        vocabulary=ItemVocabulary(ids=ids),
    )
    # Each customer's baskets in time order, valued by 1-based position.
    by_customer = np.lexsort((np.arange(len(owner)), owner))
    counts = np.bincount(owner, minlength=n_customers)
    positions = np.concatenate([np.arange(1, n + 1) for n in counts])
    history = sp.csr_array(
        (positions.astype(np.float64), by_customer, np.r_[0, np.cumsum(counts)]),
        shape=(n_customers, len(times)),
    )
    return log, history


def online_retail_policy(
    n_states: int, rng: np.random.Generator
) -> tuple[DQNPolicy, StateBatch]:
    """Return a random policy over the real catalogue and test-period states."""
    log = build_baskets(purchase_lines(read_online_retail(bootstrap.ONLINE_RETAIL)))
    config = TrainingConfig()
    fitted = np.flatnonzero(log.before(REAL_FIT_BEFORE))
    similarity = top_neighbours(
        cosine_item_similarity(sp.csr_array(log.items[fitted])),
        config.policy.neighbours,
    )
    popularity = popularity_table(
        log,
        REAL_FIT_BEFORE,
        config.policy.popularity_window_days,
        config.policy.recent_popularity_days,
    )
    text = rng.standard_normal((log.n_items, TEXT_WIDTH), dtype=np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    network = QNetwork(
        text_vectors=text,
        similarity=similarity,
        popularity=popularity.counts,
        config=config.policy,
        recent_popularity=popularity.recent,
    )
    randomise(network)
    policy = DQNPolicy(
        network=network,
        item_ids=log.vocabulary.ids,
        popularity=popularity,
        config=config,
        fitted_before=REAL_FIT_BEFORE,
    )
    cases = build_cases(log, SplitBoundaries().period("test"))
    chosen = np.sort(rng.choice(len(cases.baskets), n_states, replace=False))
    states = encode_states(
        log,
        sp.csr_array(cases.history[chosen]),
        log.times[cases.baskets[chosen]],
        popularity=popularity,
        config=config.policy,
    )
    return policy, states


def randomise(network: QNetwork) -> None:
    """Move every weight off its start, so that every head is in play."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    network.eval()


if __name__ == "__main__":
    main()
