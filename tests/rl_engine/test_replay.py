"""The replay buffer stores and hands out copies, never views."""

import numpy as np
import pytest

from rl_engine.core.replay import ReplayBuffer
from rl_engine.core.transitions import TransitionBatch


def test_changing_the_added_arrays_leaves_stored_transitions_alone(
    early_transitions: TransitionBatch,
):
    batch = TransitionBatch.from_arrays(
        {name: value.copy() for name, value in early_transitions.arrays().items()}
    )
    buffer = ReplayBuffer(capacity=len(batch))
    buffer.add(batch)
    rows = np.arange(5)
    before = buffer.take(rows)

    batch.rewards[:] = 99.0
    batch.states.sequence_items[:] = 0
    batch.next_states.context[:] = -1.0

    after = buffer.take(rows)
    assert np.array_equal(after.rewards, before.rewards)
    assert np.array_equal(after.states.sequence_items, before.states.sequence_items)
    assert np.array_equal(after.next_states.context, before.next_states.context)
    assert not np.any(after.rewards == 99.0)


def test_changing_a_sampled_batch_leaves_the_buffer_alone(
    early_transitions: TransitionBatch,
):
    buffer = ReplayBuffer(capacity=len(early_transitions))
    buffer.add(early_transitions)

    sampled = buffer.sample(8, np.random.default_rng(0))
    sampled.actions[:] = -5
    sampled.states.repeat_features[:] = 42.0

    every = buffer.take(np.arange(len(buffer)))
    assert np.array_equal(every.actions, early_transitions.actions)
    assert np.array_equal(
        every.states.repeat_features, early_transitions.states.repeat_features
    )


def test_a_full_buffer_overwrites_the_oldest_transitions(
    early_transitions: TransitionBatch,
):
    first = TransitionBatch.from_arrays(
        {name: value[:6] for name, value in early_transitions.arrays().items()}
    )
    second = TransitionBatch.from_arrays(
        {name: value[6:10] for name, value in early_transitions.arrays().items()}
    )
    buffer = ReplayBuffer(capacity=8)
    buffer.add(first)
    buffer.add(second)

    assert len(buffer) == 8
    stored = buffer.take(np.arange(8))
    # Slots 0 and 1 now hold the last two of the second batch.
    assert np.array_equal(stored.done[:2], early_transitions.done[8:10])
    assert np.array_equal(stored.done[2:6], early_transitions.done[2:6])
    with pytest.raises(IndexError):
        buffer.take(np.array([8]))


def test_an_epoch_visits_every_transition_once(early_transitions: TransitionBatch):
    buffer = ReplayBuffer(capacity=len(early_transitions))
    buffer.add(early_transitions)

    seen = sum(len(batch) for batch in buffer.epoch(32, np.random.default_rng(1)))

    assert seen == len(early_transitions)
