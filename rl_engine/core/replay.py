"""Experience replay: a ring buffer of transitions stored as copies.

``add`` copies every array into storage the buffer owns, and ``sample`` returns
fresh copies, so no caller can change a stored transition afterwards and no
sampled batch shares memory with the buffer.
"""

from collections.abc import Iterator

import numpy as np

from rl_engine.core.transitions import TransitionBatch


class ReplayBuffer:
    """Holds up to ``capacity`` transitions; the oldest are overwritten first."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._storage: dict[str, np.ndarray] = {}
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, batch: TransitionBatch) -> None:
        """Copy ``batch`` in."""
        arrays = batch.arrays()
        if not self._storage:
            self._storage = {
                name: np.zeros((self.capacity, *value.shape[1:]), dtype=value.dtype)
                for name, value in arrays.items()
            }
        n = len(batch)
        if n > self.capacity:
            arrays = {name: value[-self.capacity :] for name, value in arrays.items()}
            n = self.capacity
        slots = (self._next + np.arange(n)) % self.capacity
        for name, value in arrays.items():
            self._storage[name][slots] = value
        self._next = int((self._next + n) % self.capacity)
        self._size = min(self._size + n, self.capacity)

    def take(self, rows: np.ndarray) -> TransitionBatch:
        """Return copies of the transitions in ``rows`` (0 <= row < len)."""
        if len(rows) and (rows.min() < 0 or rows.max() >= self._size):
            raise IndexError("row outside the stored transitions")
        return TransitionBatch.from_arrays(
            {name: value[rows] for name, value in self._storage.items()}
        )

    def sample(self, batch_size: int, rng: np.random.Generator) -> TransitionBatch:
        """Return ``batch_size`` transitions drawn uniformly, with replacement."""
        return self.take(rng.integers(0, self._size, size=batch_size))

    def epoch(
        self, batch_size: int, rng: np.random.Generator
    ) -> Iterator[TransitionBatch]:
        """Yield every stored transition once, shuffled, in batches."""
        order = rng.permutation(self._size)
        for start in range(0, self._size, batch_size):
            yield self.take(order[start : start + batch_size])
