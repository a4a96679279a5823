"""The trained policy: a Q-network with what it needs to encode states.

:class:`DQNRecommender` fits a policy on a basket log and scores evaluation
cases, so the offline harness evaluates it exactly as it does the baselines.
:class:`DQNPolicy` is the artifact: saved atomically, loaded for serving.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
import torch

from rl_engine.core.baselines import cosine_item_similarity
from rl_engine.core.candidates import CandidateSearch
from rl_engine.core.config import TrainingConfig
from rl_engine.core.protocol import BasketLog, CaseBatch
from rl_engine.core.qnetwork import QNetwork, top_neighbours
from rl_engine.core.replay import ReplayBuffer
from rl_engine.core.states import (
    PopularityTable,
    StateBatch,
    encode_states,
    popularity_table,
)
from rl_engine.core.text_encoder import pick_device
from rl_engine.core.trainer import (
    DQNTrainer,
    EpochCallback,
    atomic_torch_save,
    seed_everything,
    to_tensors,
)
from rl_engine.core.transitions import build_transitions

logger = logging.getLogger(__name__)

TextVectors = Callable[[np.ndarray], np.ndarray]
"""Maps an array of item ids to their (ids x dimension) text vectors."""

DEFAULT_SEARCH = CandidateSearch()

SCORING_BATCH = 512
SCORING_CELLS = 1 << 22
"""Most (states x items) Q-values scored at once, so that on a large catalogue
a batch holds fewer states and its memory stays bounded."""


@dataclass
class DQNPolicy:
    """A trained Q-network over a fixed catalogue, ready to score states."""

    network: QNetwork
    item_ids: np.ndarray
    popularity: PopularityTable
    config: TrainingConfig
    fitted_before: np.datetime64
    metrics: list[dict[str, float]] = field(default_factory=list)
    transitions: int = 0
    """How many logged transitions it was trained on."""

    @torch.no_grad()
    def q_values(self, states: StateBatch, *, candidates: bool = False) -> np.ndarray:
        """Return (states x items) Q-values, in batches, by ``QNetwork.score``.

        ``candidates`` lets one serving state be scored on retrieved candidates
        only (-inf elsewhere) where the catalogue has a candidate index.
        """
        if self.network.training:
            self.network.eval()
        device = next(self.network.parameters()).device
        n_items = len(self.item_ids)
        batch = max(1, min(SCORING_BATCH, SCORING_CELLS // max(n_items, 1)))
        if 0 < len(states) <= batch:
            tensors = to_tensors(states, device)
            return self.network.score(tensors, candidates=candidates).cpu().numpy()
        scores = np.empty((len(states), n_items), dtype=np.float32)
        for start in range(0, len(states), batch):
            rows = np.arange(start, min(start + batch, len(states)))
            q = self.network.score(to_tensors(states.take(rows), device))
            scores[rows] = q.cpu().numpy()
        return scores

    def encode(
        self, log: BasketLog, history: sp.csr_array, times: np.ndarray
    ) -> StateBatch:
        """Encode states; popularity is never read past the fit boundary."""
        return encode_states(
            log,
            history,
            times,
            popularity=self.popularity,
            config=self.config.policy,
        )

    def save(self, path: Path) -> None:
        """Write the artifact atomically."""
        atomic_torch_save(
            {
                "config": self.config.as_dict(),
                "item_ids": self.item_ids.tolist(),
                "text": self.network.text[:-1].cpu().numpy(),
                "similarity": sp.csr_array(_network_similarity(self.network)),
                "popularity_moments": self.popularity.moments.astype("int64"),
                "popularity_counts": self.popularity.counts,
                "popularity_recent": self.popularity.recent,
                "fitted_before": self.fitted_before.astype("datetime64[s]").astype(
                    "int64"
                ),
                "state_dict": self.network.state_dict(),
                "metrics": self.metrics,
                "transitions": self.transitions,
            },
            path,
        )

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        device: str | None = None,
        candidate_search: CandidateSearch | None = DEFAULT_SEARCH,
    ) -> Self:
        """Read an artifact; build what scoring keeps, candidate index included."""
        saved = torch.load(path, map_location="cpu", weights_only=False)
        config = TrainingConfig.from_dict(saved["config"])
        popularity = PopularityTable(
            moments=saved["popularity_moments"].astype("datetime64[s]"),
            counts=saved["popularity_counts"],
            recent=saved.get("popularity_recent"),
        )
        network = QNetwork(
            text_vectors=saved["text"],
            similarity=saved["similarity"],
            popularity=popularity.counts,
            config=config.policy,
            recent_popularity=popularity.recent,
        )
        network.load_state_dict(saved["state_dict"])
        network.to(pick_device(device or config.device))
        network.candidate_search = candidate_search
        # Build what scoring keeps now rather than on the first request.
        network.eval().scoring_tables()
        return cls(
            network=network,
            item_ids=np.asarray(saved["item_ids"], dtype=object),
            popularity=popularity,
            config=config,
            fitted_before=np.datetime64(int(saved["fitted_before"]), "s"),
            metrics=saved["metrics"],
            transitions=saved.get("transitions", 0),
        )


def _network_similarity(network: QNetwork) -> sp.coo_array:
    indices = network.similarity_indices.cpu().numpy()
    values = network.similarity_values.cpu().numpy()
    n = network.n_items
    return sp.coo_array((values, (indices[0], indices[1])), shape=(n, n))


@dataclass
class DQNRecommender:
    """Fits a DQN policy on the baskets before a moment; scores cases with it."""

    text_vectors: TextVectors
    config: TrainingConfig = field(default_factory=TrainingConfig)
    name: str = "policy"
    returned: sp.csr_array | None = None
    """Optional (log baskets x items): products of a basket later returned."""
    on_epoch: EpochCallback | None = None
    checkpoint_path: Path | None = None
    policy: DQNPolicy | None = field(default=None, init=False, repr=False)

    def fit(self, log: BasketLog, before: np.datetime64) -> None:
        """Train on every transition strictly before ``before``."""
        self.policy = train_policy(
            log,
            before,
            text_vectors=self.text_vectors(log.vocabulary.ids),
            config=self.config,
            returned=self.returned,
            on_epoch=self.on_epoch,
            checkpoint_path=self.checkpoint_path,
        )

    def score(self, cases: CaseBatch) -> np.ndarray:
        if self.policy is None:
            raise RuntimeError(f"{self.name} must be fitted before it scores cases")
        states = self.policy.encode(cases.log, cases.history, cases.times)
        return self.policy.q_values(states)


def train_policy(
    log: BasketLog,
    before: np.datetime64,
    *,
    text_vectors: np.ndarray,
    config: TrainingConfig,
    returned: sp.csr_array | None = None,
    on_epoch: EpochCallback | None = None,
    checkpoint_path: Path | None = None,
) -> DQNPolicy:
    """Build transitions before ``before``, fill a replay buffer and train."""
    seed_everything(config.seed, deterministic=config.deterministic)
    started = time.perf_counter()
    fitted = np.flatnonzero(log.before(before))
    similarity = top_neighbours(
        cosine_item_similarity(sp.csr_array(log.items[fitted])),
        config.policy.neighbours,
    )
    popularity = popularity_table(
        log,
        before,
        config.policy.popularity_window_days,
        config.policy.recent_popularity_days,
    )
    transitions = build_transitions(
        log,
        before,
        popularity=popularity,
        config=config.policy,
        rewards=config.rewards,
        max_actions=config.max_actions,
        returned=returned,
        seed=config.seed,
        min_history=config.min_history,
    )
    buffer = ReplayBuffer(capacity=max(len(transitions), 1))
    buffer.add(transitions)
    logger.info(
        "Built %d transitions before %s in %.1f s",
        len(transitions),
        before,
        time.perf_counter() - started,
        extra={"transitions": len(transitions)},
    )

    network = QNetwork(
        text_vectors=text_vectors,
        similarity=similarity,
        popularity=popularity.counts,
        config=config.policy,
        recent_popularity=popularity.recent,
    )
    trainer = DQNTrainer(
        network,
        config,
        device=pick_device(config.device),
        checkpoint_path=checkpoint_path,
    )
    history = trainer.fit(buffer, on_epoch=on_epoch)
    return DQNPolicy(
        network=trainer.policy_network(),
        item_ids=log.vocabulary.ids,
        popularity=popularity,
        config=config,
        fitted_before=before,
        metrics=history,
        transitions=len(transitions),
    )


def config_summary(config: TrainingConfig) -> dict[str, Any]:
    """Return the settings worth showing next to a policy's figures."""
    return {
        "epochs": config.epochs,
        "gamma": config.gamma,
        "cql_alpha": config.cql_alpha,
        "hidden": config.policy.hidden,
    }
