"""The serving path of the Q-network against the training pass it must agree with.

``QNetwork.score`` keeps the state-free parts of scoring and runs the
co-occurrence head on the seed items' neighbours only, so that it scales to a
large catalogue; ``forward`` is the straightforward computation over the whole
catalogue. Both must give the same Q-values to float32 rounding.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from rl_engine.core import policy as policy_module
from rl_engine.core import qnetwork
from rl_engine.core.candidates import CandidateSearch
from rl_engine.core.policy import DQNPolicy
from rl_engine.core.protocol import BasketLog
from rl_engine.core.qnetwork import QNetwork, seeded_neighbour_sums
from rl_engine.core.replay import ReplayBuffer
from rl_engine.core.serving import best_candidates
from rl_engine.core.states import StateBatch, popularity_table
from rl_engine.core.trainer import DQNTrainer, seed_everything, to_tensors
from rl_engine.core.transitions import TransitionBatch
from tests.rl_engine.conftest import (
    EARLY_BOUNDARY,
    small_network,
    small_training_config,
)

CPU = torch.device("cpu")


def randomised_network(log: BasketLog) -> QNetwork:
    """A small network with every weight moved off its start, heads included."""
    network = small_network(log)
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for parameter in network.parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.add_(0.3 * noise)
    return network.eval()


def trained_network(log: BasketLog, transitions: TransitionBatch) -> QNetwork:
    config = small_training_config()
    seed_everything(config.seed, deterministic=True)
    trainer = DQNTrainer(small_network(log), config, device=CPU)
    buffer = ReplayBuffer(capacity=len(transitions))
    buffer.add(transitions)
    for batch in buffer.epoch(64, np.random.default_rng(0)):
        trainer.step(batch)
    return trainer.policy_network().eval()


def straightforward_q(network: QNetwork, states: StateBatch) -> np.ndarray:
    with torch.no_grad():
        return network(to_tensors(states, CPU)).numpy()


def assert_same_q(served: np.ndarray, expected: np.ndarray) -> None:
    assert served.shape == expected.shape
    assert served.dtype == np.float32
    tolerance = 1e-5 * max(float(np.abs(expected).max()), 1.0)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=tolerance)


def some_states(transitions: TransitionBatch, n: int = 96) -> StateBatch:
    # Every fifth state: customers with short and long histories alike.
    return transitions.states.take(np.arange(n) * 5 % len(transitions))


def as_policy(network: QNetwork, log: BasketLog) -> DQNPolicy:
    return DQNPolicy(
        network=network,
        item_ids=log.vocabulary.ids,
        popularity=popularity_table(log, EARLY_BOUNDARY, 30),
        config=small_training_config(),
        fitted_before=EARLY_BOUNDARY,
    )


@pytest.fixture(params=["every product", "neighbours only"])
def cooccurrence_path(request, monkeypatch):
    """Run ``score`` with the co-occurrence head on every product, or sparsely."""
    limit = 0.0 if request.param == "every product" else float("inf")
    monkeypatch.setattr(qnetwork, "SPARSE_COOC_MAX_READS", limit)
    return request.param


def test_score_matches_the_training_pass_on_a_randomised_network(
    early_log, early_transitions, cooccurrence_path
):
    network = randomised_network(early_log)
    states = some_states(early_transitions)

    served = network.score(to_tensors(states, CPU)).numpy()

    expected = straightforward_q(network, states)
    # The heads are all in play: Q spreads over a wide range.
    assert expected.std() > 1.0
    assert_same_q(served, expected)


def test_score_matches_the_training_pass_on_a_trained_network(
    early_log, early_transitions, cooccurrence_path
):
    network = trained_network(early_log, early_transitions)
    states = some_states(early_transitions)

    served = network.score(to_tensors(states, CPU)).numpy()

    assert_same_q(served, straightforward_q(network, states))


def test_one_state_at_a_time_matches_the_batch(
    early_log, early_transitions, cooccurrence_path
):
    network = randomised_network(early_log)
    states = some_states(early_transitions, n=8)

    one_by_one = np.vstack(
        [
            network.score(to_tensors(states.take(np.array([row])), CPU)).numpy()
            for row in range(len(states))
        ]
    )

    assert_same_q(one_by_one, straightforward_q(network, states))


def test_policy_q_values_in_chunks_match_the_training_pass(
    early_log, early_transitions, monkeypatch
):
    network = randomised_network(early_log)
    policy = as_policy(network, early_log)
    states = some_states(early_transitions, n=40)
    # Room for 16 states of this catalogue per chunk: three chunks.
    monkeypatch.setattr(policy_module, "SCORING_CELLS", 16 * early_log.n_items)

    chunked = policy.q_values(states)

    assert_same_q(chunked, straightforward_q(network, states))
    assert policy.q_values(states.take(np.arange(0))).shape == (0, early_log.n_items)


def test_a_saved_and_loaded_policy_serves_the_same_q_values(
    early_log, early_transitions, tmp_path
):
    policy = as_policy(randomised_network(early_log), early_log)
    states = some_states(early_transitions, n=16)
    policy.save(tmp_path / "policy.pt")

    loaded = DQNPolicy.load(tmp_path / "policy.pt", device="cpu")

    assert loaded.network.similarity_dense is None
    assert_same_q(loaded.q_values(states), policy.q_values(states))
    assert_same_q(loaded.q_values(states), straightforward_q(policy.network, states))


def test_serving_never_builds_the_dense_similarity(early_log, early_transitions):
    network = randomised_network(early_log)
    policy = as_policy(network, early_log)

    policy.q_values(some_states(early_transitions, n=4))

    assert network.similarity_dense is None
    tables = network.scoring_tables()
    assert tables.items.is_contiguous()
    assert tables.items.dtype == torch.float32
    assert tables.similarity.nnz == network.similarity_values.numel()


def test_scoring_tables_follow_changed_weights(early_log, early_transitions):
    network = randomised_network(early_log)
    states = some_states(early_transitions, n=16)
    before = network.score(to_tensors(states, CPU)).numpy()
    first_tables = network.scoring_tables()

    with torch.no_grad():
        network.item_bias.add_(2.0)
        network.text_projection.weight.mul_(0.5)
    after = network.score(to_tensors(states, CPU)).numpy()

    assert network.scoring_tables() is not first_tables
    assert_same_q(after, straightforward_q(network, states))
    assert not np.allclose(after, before, atol=1e-3)

    reloaded = randomised_network(early_log)
    reloaded.score(to_tensors(states, CPU))
    reloaded.load_state_dict(network.state_dict())
    assert_same_q(
        reloaded.score(to_tensors(states, CPU)).numpy(),
        straightforward_q(network, states),
    )


def test_seeded_neighbour_sums_match_the_dense_product():
    rng = np.random.default_rng(5)
    n_items, batch = 300, 4
    similarity = sp.random_array(
        (n_items, n_items), density=0.05, format="csr", dtype=np.float32, rng=rng
    )
    pad = n_items
    recent = rng.integers(0, n_items, size=(batch, 12))
    recent[:, 9:] = pad
    recent_counts = rng.integers(1, 4, size=(batch, 12)).astype(np.float32)
    history = np.array([rng.permutation(n_items)[:10] for _ in range(batch)])
    history[3] = pad
    recent[3] = pad  # a state with no history: no cell of its own
    in_last = (rng.random((batch, 10)) < 0.5).astype(np.float32)
    share = rng.random((batch, 10)).astype(np.float32)
    seed_sets = [(recent, recent_counts), (history, in_last), (history, share)]

    cells, sums = seeded_neighbour_sums(similarity, seed_sets)

    dense = np.zeros((batch * n_items, 3))
    for index, (items, weights) in enumerate(seed_sets):
        seeds = np.zeros((batch, n_items + 1))
        for row in range(batch):
            np.add.at(seeds[row], items[row], weights[row])
        dense[:, index] = (seeds[:, :n_items] @ similarity.toarray()).ravel()
    assert len(np.unique(cells)) == len(cells)
    np.testing.assert_allclose(sums, dense[cells].T, rtol=1e-5)
    others = np.setdiff1d(np.arange(batch * n_items), cells)
    assert not dense[others].any()
    assert not np.any(cells // n_items == 3)


def test_best_candidates_are_the_top_eligible_scores_best_first():
    rng = np.random.default_rng(8)
    scores = rng.normal(size=5000).astype(np.float32)
    eligible = rng.random(5000) < 0.7

    picked = best_candidates(scores, eligible, 200)

    by_score = np.flatnonzero(eligible)[np.argsort(-scores[eligible])]
    assert picked.tolist() == by_score[:200].tolist()


def test_best_candidates_keep_every_eligible_item_when_few_and_order_ties():
    scores = np.array([1.0, 3.0, 3.0, 0.5, 3.0, 2.0])
    eligible = np.array([True, True, False, True, True, True])

    assert best_candidates(scores, eligible, 10).tolist() == [1, 4, 5, 0, 3]
    assert best_candidates(scores, eligible, 3).tolist() == [1, 4, 5]


def test_best_candidates_are_exact_when_the_sample_misleads():
    rng = np.random.default_rng(9)
    scores = rng.normal(size=100_000)
    # Every sampled score beats every other one: the cut lets too few through.
    scores[::10] = 1000.0 + rng.permutation(10_000)
    eligible = np.ones(len(scores), dtype=bool)

    picked = best_candidates(scores, eligible, 200)

    assert picked.tolist() == np.argsort(-scores, kind="stable")[:200].tolist()


# Serving a large catalogue from retrieved candidates.

EXHAUSTIVE = CandidateSearch(
    min_items=0, candidates=60, lists_per_sqrt_items=1.0, probes=10_000
)
"""An index on any catalogue that reads every list: its search is exact."""


def latest_slot_states(network: QNetwork, transitions: TransitionBatch) -> StateBatch:
    """Some states moved into the latest popularity slot, where serving is."""
    states = some_states(transitions, n=24)
    states.popularity_slot[:] = len(network.popularity) - 1
    return states


def test_a_catalogue_below_the_threshold_is_scored_in_full(early_log):
    network = randomised_network(early_log)

    assert network.candidate_search is not None
    assert network.n_items < network.candidate_search.min_items
    assert network.scoring_tables().candidates is None


def test_candidates_get_their_exact_q_values_and_hold_the_best(
    early_log, early_transitions
):
    network = randomised_network(early_log)
    network.candidate_search = EXHAUSTIVE
    states = latest_slot_states(network, early_transitions)
    expected = straightforward_q(network, states)

    for row in range(len(states)):
        one = to_tensors(states.take(np.array([row])), CPU)
        served = network.score(one, candidates=True)[0]
        scored = torch.isfinite(served).numpy()

        assert network.scoring_tables().candidates is not None
        assert scored.sum() >= EXHAUSTIVE.candidates
        assert scored.sum() < network.n_items
        tolerance = 1e-5 * max(float(np.abs(expected[row]).max()), 1.0)
        np.testing.assert_allclose(
            served.numpy()[scored], expected[row][scored], rtol=1e-5, atol=tolerance
        )
        # An exact search returns the best unreached products; the reached
        # ones and the history are scored besides: the best are all there.
        best = np.argsort(-expected[row], kind="stable")[: EXHAUSTIVE.candidates]
        assert scored[best].all()
        history = states.history_items[row]
        assert scored[history[history < network.n_items]].all()


def test_batches_and_other_popularity_slots_are_scored_in_full(
    early_log, early_transitions
):
    network = randomised_network(early_log)
    network.candidate_search = EXHAUSTIVE
    states = latest_slot_states(network, early_transitions)
    states.popularity_slot[0] = 0

    assert_same_q(
        network.score(to_tensors(states, CPU)).numpy(),
        straightforward_q(network, states),
    )
    first = to_tensors(states.take(np.array([0])), CPU)
    assert np.isfinite(network.score(first, candidates=True).numpy()).all()
    # Without asking for candidates (explanations, evaluation), a single state
    # in the serving slot is scored in full too.
    second = states.take(np.array([1]))
    assert_same_q(
        network.score(to_tensors(second, CPU)).numpy(),
        straightforward_q(network, second),
    )


def test_changing_the_candidate_settings_rebuilds_the_tables(early_log):
    network = randomised_network(early_log)
    full = network.scoring_tables()

    network.candidate_search = EXHAUSTIVE
    indexed = network.scoring_tables()

    assert full.candidates is None
    assert indexed is not full
    assert indexed.candidates is not None
    assert indexed.candidates.index.ntotal == network.n_items
