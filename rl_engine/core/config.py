"""Hyperparameters of the policy and its training, one documented field each."""

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class RewardConfig:
    """Reward of each kind of feedback on a recommended product.

    Transitions are built from baskets (``transitions.py``), so training uses
    ``purchase`` and ``return_`` only; ``add_to_cart``, ``click`` and
    ``impression`` are kept for learning from served slates, which is not
    built yet.
    """

    purchase: float = 1.0
    """A purchase of the product."""
    add_to_cart: float = 0.5
    """The product put in the cart."""
    click: float = 0.2
    """A click on the product."""
    impression: float = -0.02
    """Shown and not clicked."""
    return_: float = -1.0
    """The product sent back after a purchase; added to that purchase's reward."""


@dataclass(frozen=True)
class PolicyConfig:
    """Shape of the state encoder and the Q-network."""

    hidden: int = 64
    """Width of item vectors, the state vector and the GRU."""
    sequence_length: int = 50
    """Most recent history events the GRU reads."""
    max_history_items: int = 512
    """Distinct history items whose repeat features the Q-head sees."""
    recent_baskets: int = 3
    """History baskets whose items seed the co-occurrence feature."""
    max_recent_items: int = 256
    """Cap on the items of those baskets."""
    history_seed_items: int = 64
    """Most bought history items that seed the whole-history kNN feature."""
    neighbours: int = 200
    """Co-occurrence neighbours kept per item."""
    popularity_window_days: int = 30
    """Span of the popularity feature, counted back from the state's time."""
    recent_popularity_days: int = 7
    """Span of the short-term popularity feature, which shows trends."""
    prior_repeat: float = 8.0
    """Starting weight of the repeat share (the blend's repeat part) in Q."""
    prior_knn: float = 2.0
    """Starting weight of the kNN score over its maximum in Q."""
    prior_popularity: float = 1.0
    """Starting weight of the scaled popularity in Q."""


@dataclass(frozen=True)
class TrainingConfig:
    """Double DQN with a target network, replay and a conservative (CQL) penalty."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """Network shape."""
    rewards: RewardConfig = field(default_factory=RewardConfig)
    """Reward per feedback kind."""
    seed: int = 7
    """Seed of every random generator."""
    deterministic: bool = False
    """Use deterministic kernels and one thread, for tests that compare runs."""
    epochs: int = 4
    """Passes over the replay buffer."""
    batch_size: int = 128
    """States per gradient step."""
    learning_rate: float = 2e-3
    """Adam step size."""
    weight_decay: float = 1e-3
    """Adam L2 penalty."""
    gamma: float = 0.5
    """Discount of the next state's value."""
    polyak: float = 0.05
    """Share of the online weights blended into the target network per step;
    1.0 makes it a hard copy every ``target_update_every`` steps."""
    target_update_every: int = 1
    """Gradient steps between target-network updates."""
    cql_alpha: float = 10.0
    """Weight of the CQL(H) penalty: logsumexp of Q over the whole catalogue minus
    Q of the logged actions."""
    cql_repeat_weight: float = 30.0
    """Weight in the CQL logged mean of repeat actions (bought before); new weigh 1."""
    cql_new_alpha: float = 2.5
    """Weight of a second CQL term over only the products a state never bought."""
    cql_history_alpha: float = 1.0
    """Weight of a third CQL term over only the products a state bought before."""
    cql_temperature: float = 1.0
    """Temperature of the CQL log-sum-exp over the catalogue; 1 is plain CQL(H)."""
    average_decay: float = 0.99
    """Decay of a moving average of the online weights served; 0: last weights."""
    max_grad_norm: float = 5.0
    """Global gradient-norm clip."""
    min_history: int = 1
    """Fewest earlier baskets of a state trained on (served customers have many)."""
    max_actions: int = 128
    """Logged actions kept per state; larger baskets are subsampled."""
    device: str | None = None
    """Torch device; None picks CUDA when present, else the CPU."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainingConfig":
        values = dict(values)
        policy = PolicyConfig(**values.pop("policy", {}))
        rewards = RewardConfig(**values.pop("rewards", {}))
        return cls(policy=policy, rewards=rewards, **values)
