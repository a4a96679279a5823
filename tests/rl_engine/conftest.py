import numpy as np
import pytest
import scipy.sparse as sp

from rl_engine.core.baselines import cosine_item_similarity
from rl_engine.core.config import PolicyConfig, TrainingConfig
from rl_engine.core.protocol import (
    BasketLog,
    build_baskets,
    purchase_lines,
    read_online_retail,
)
from rl_engine.core.qnetwork import QNetwork, top_neighbours
from rl_engine.core.states import popularity_table
from rl_engine.core.transitions import TransitionBatch, build_transitions
from tests.conftest import ONLINE_RETAIL

# The first three weeks of the real log: about 1,200 baskets.
EARLY_LOG_END = np.datetime64("2010-12-22")
EARLY_BOUNDARY = np.datetime64("2010-12-15")

SMALL_POLICY = PolicyConfig(
    hidden=8,
    sequence_length=10,
    max_history_items=32,
    recent_baskets=3,
    max_recent_items=32,
    neighbours=20,
)


@pytest.fixture(scope="session")
def early_log() -> BasketLog:
    lines = purchase_lines(read_online_retail(ONLINE_RETAIL))
    return build_baskets(lines[lines["occurred_at"] < EARLY_LOG_END])


def small_training_config(**overrides: object) -> TrainingConfig:
    values: dict[str, object] = {
        "policy": SMALL_POLICY,
        "epochs": 2,
        "batch_size": 64,
        "deterministic": True,
        "max_actions": 16,
    }
    values.update(overrides)
    return TrainingConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def early_transitions(early_log: BasketLog) -> TransitionBatch:
    config = small_training_config()
    return build_transitions(
        early_log,
        EARLY_BOUNDARY,
        popularity=popularity_table(early_log, EARLY_BOUNDARY, 30),
        config=config.policy,
        rewards=config.rewards,
        max_actions=config.max_actions,
    )


def small_network(log: BasketLog, seed: int = 0) -> QNetwork:
    """A small Q-network over ``log`` with random (seeded) text vectors."""
    rng = np.random.default_rng(seed)
    fitted = np.flatnonzero(log.before(EARLY_BOUNDARY))
    similarity = top_neighbours(
        cosine_item_similarity(sp.csr_array(log.items[fitted])), SMALL_POLICY.neighbours
    )
    text = rng.normal(size=(log.n_items, 12)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    return QNetwork(
        text_vectors=text,
        similarity=similarity,
        popularity=popularity_table(log, EARLY_BOUNDARY, 30).counts,
        config=SMALL_POLICY,
    )
