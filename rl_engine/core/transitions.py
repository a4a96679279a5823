"""Transitions from the logged baskets: (state, products bought, rewards, next state).

One transition per basket of a customer with an earlier basket: the state is the
customer just before the basket, the actions are the basket's products, each
rewarded as a purchase (plus the return reward when it came back), and the next
state is the same customer just before their next basket. A customer's last
basket ends its episode (done).
"""

from dataclasses import dataclass
from typing import Self

import numpy as np
import scipy.sparse as sp

from rl_engine.core.config import PolicyConfig, RewardConfig
from rl_engine.core.protocol import BasketLog, CaseBatch, Period, build_cases
from rl_engine.core.states import PopularityTable, StateBatch, encode_states


@dataclass(frozen=True, eq=False)
class TransitionBatch:
    """Transitions aligned by row; action slots past a row's length hold n_items."""

    states: StateBatch
    actions: np.ndarray
    """(n, max_actions) products acted on."""
    rewards: np.ndarray
    """(n, max_actions) reward of each action; 0 in padding."""
    next_states: StateBatch
    done: np.ndarray
    """(n,) 1.0 where the episode ends after this step."""

    def __len__(self) -> int:
        return len(self.done)

    def arrays(self) -> dict[str, np.ndarray]:
        """Flatten to named arrays, as the replay buffer stores them."""
        flat = {"actions": self.actions, "rewards": self.rewards, "done": self.done}
        flat |= {f"states.{k}": v for k, v in self.states.arrays().items()}
        flat |= {f"next_states.{k}": v for k, v in self.next_states.arrays().items()}
        return flat

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Self:
        def states(prefix: str) -> StateBatch:
            return StateBatch(
                **{
                    name.removeprefix(prefix): value
                    for name, value in arrays.items()
                    if name.startswith(prefix)
                }
            )

        return cls(
            states=states("states."),
            actions=arrays["actions"],
            rewards=arrays["rewards"],
            next_states=states("next_states."),
            done=arrays["done"],
        )


def build_transitions(
    log: BasketLog,
    before: np.datetime64,
    *,
    popularity: PopularityTable,
    config: PolicyConfig,
    rewards: RewardConfig,
    max_actions: int,
    returned: sp.csr_array | None = None,
    seed: int = 0,
    min_history: int = 1,
) -> TransitionBatch:
    """Build the transitions of every basket strictly before ``before``.

    ``returned`` is an optional (log baskets x items) matrix, non-zero where
    the basket's product was later returned. Only states with at least
    ``min_history`` earlier baskets are kept; their next states need not be.
    """
    steps = build_cases(log, Period(name="fit", start=None, end=before), "all")
    states = encode_states(
        log, steps.history, steps.times, popularity=popularity, config=config
    )
    actions, action_rewards = _basket_actions(
        steps, rewards, max_actions, returned, np.random.default_rng(seed)
    )
    next_step = _next_step_of_customer(steps)
    done = (next_step < 0).astype(np.float32)
    next_states = states.take(np.where(next_step >= 0, next_step, np.arange(len(done))))
    kept = np.flatnonzero(np.diff(steps.history.indptr) >= min_history)
    return TransitionBatch(
        states=states.take(kept),
        actions=actions[kept],
        rewards=action_rewards[kept],
        next_states=next_states.take(kept),
        done=done[kept],
    )


def _basket_actions(
    steps: CaseBatch,
    rewards: RewardConfig,
    max_actions: int,
    returned: sp.csr_array | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    basket_items = sp.csr_array(steps.log.items[steps.baskets])
    n = len(steps.baskets)
    actions = np.full((n, max_actions), steps.n_items, dtype=np.int64)
    action_rewards = np.zeros((n, max_actions), dtype=np.float32)
    returned_rows = (
        sp.csr_array(returned[steps.baskets]) if returned is not None else None
    )
    for row in range(n):
        items = basket_items.indices[
            basket_items.indptr[row] : basket_items.indptr[row + 1]
        ]
        if len(items) > max_actions:
            items = rng.choice(items, size=max_actions, replace=False)
        actions[row, : len(items)] = items
        action_rewards[row, : len(items)] = rewards.purchase
        if returned_rows is not None:
            came_back = returned_rows[[row]].toarray().ravel()[items] > 0
            action_rewards[row, : len(items)] += rewards.return_ * came_back
    return actions, action_rewards


def _next_step_of_customer(steps: CaseBatch) -> np.ndarray:
    """Return each step's customer's next step (row), or -1 for their last."""
    customers = steps.customer_codes
    order = np.lexsort((np.arange(len(customers)), customers))
    next_step = np.full(len(customers), -1, dtype=np.int64)
    same = customers[order[1:]] == customers[order[:-1]]
    next_step[order[:-1][same]] = order[1:][same]
    return next_step
