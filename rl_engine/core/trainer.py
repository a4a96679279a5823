"""Train the Q-network offline from a replay buffer of logged transitions.

Each gradient step samples states, computes Double DQN targets with the target
network, and minimises the TD loss plus the CQL penalty. The target network
follows the online one by Polyak averaging (or a hard copy). Checkpoints hold
everything needed to resume: both networks, the optimiser, the step count and
the random generators.
"""

import copy
import logging
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rl_engine.core.config import TrainingConfig
from rl_engine.core.objectives import (
    cql_penalty,
    double_dqn_targets,
    td_loss,
    weighted_cql_penalty,
)
from rl_engine.core.qnetwork import QNetwork
from rl_engine.core.replay import ReplayBuffer
from rl_engine.core.states import StateBatch

logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], object]


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; in deterministic mode, pin the kernels too."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)


def to_tensors(states: StateBatch, device: torch.device) -> dict[str, torch.Tensor]:
    return {
        name: torch.as_tensor(value, device=device)
        for name, value in states.arrays().items()
    }


@dataclass
class TrainingProgress:
    """Where training stands: what a checkpoint restores."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


class DQNTrainer:
    """Offline Double DQN with a target network and a CQL penalty."""

    def __init__(
        self,
        network: QNetwork,
        config: TrainingConfig,
        *,
        device: torch.device,
        checkpoint_path: Path | None = None,
    ) -> None:
        self.config = config
        self.device = device
        self.online = network.to(device)
        self.target = copy.deepcopy(network).to(device)
        self.target.requires_grad_(False)
        # Optional slow average of the online weights: the policy that is kept,
        # which smooths the epoch-to-epoch noise of the last online weights.
        self.average: QNetwork | None = None
        if config.average_decay > 0:
            self.average = copy.deepcopy(network).to(device)
            self.average.requires_grad_(False)
        self.optimizer = torch.optim.Adam(
            self.online.parameters(),
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
        )
        self.rng = np.random.default_rng(config.seed)
        self.progress = TrainingProgress()
        self.checkpoint_path = checkpoint_path
        if checkpoint_path is not None and checkpoint_path.exists():
            self.load_checkpoint(checkpoint_path)

    def fit(
        self, buffer: ReplayBuffer, *, on_epoch: EpochCallback | None = None
    ) -> list[dict[str, float]]:
        """Train until ``config.epochs`` passes; resume where a checkpoint left."""
        while self.progress.epoch < self.config.epochs:
            self.online.train()
            sums: dict[str, float] = {}
            batches = 0
            for batch in buffer.epoch(self.config.batch_size, self.rng):
                for name, value in self.step(batch).items():
                    sums[name] = sums.get(name, 0.0) + value
                batches += 1
            metrics = {name: total / max(batches, 1) for name, total in sums.items()}
            self.progress.epoch += 1
            self.progress.history.append(metrics)
            logger.info(
                "Epoch %d: loss/td %.4f, loss/cql %.4f",
                self.progress.epoch,
                metrics.get("loss/td", float("nan")),
                metrics.get("loss/cql", float("nan")),
                extra={"epoch": self.progress.epoch, **metrics},
            )
            if self.checkpoint_path is not None:
                self.save_checkpoint(self.checkpoint_path)
            if on_epoch is not None:
                on_epoch(self.progress.epoch, metrics)
        return self.progress.history

    def step(self, batch: Any) -> dict[str, float]:
        """Take one gradient step on a TransitionBatch; return its metrics."""
        states = to_tensors(batch.states, self.device)
        next_states = to_tensors(batch.next_states, self.device)
        actions = torch.as_tensor(batch.actions, device=self.device)
        rewards = torch.as_tensor(batch.rewards, device=self.device)
        done = torch.as_tensor(batch.done, device=self.device)
        n_items = self.online.n_items
        mask = (actions < n_items).float()
        safe_actions = actions.clamp(max=n_items - 1)

        q_all = self.online(states)
        q_taken = q_all.gather(1, safe_actions)
        with torch.no_grad():
            # Co-occurrence inputs hold no parameters: compute them once.
            next_features = self.online.candidate_features(next_states)
            targets = double_dqn_targets(
                rewards,
                done,
                next_q_online=self.online(next_states, next_features),
                next_q_target=self.target(next_states, next_features),
                gamma=self.config.gamma,
            )
        loss_td = td_loss(q_taken, targets, mask)
        loss_cql = self._conservative_penalty(
            states, q_all, q_taken, safe_actions, mask
        )
        loss = loss_td + self.config.cql_alpha * loss_cql

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(
            self.online.parameters(), self.config.max_grad_norm
        )
        self.optimizer.step()
        self.progress.step += 1
        if self.progress.step % self.config.target_update_every == 0:
            self.update_target()
        self.update_average()
        return {
            "loss/td": loss_td.item(),
            "loss/cql": loss_cql.item(),
            "loss/total": loss.item(),
            "q/logged_mean": float(
                (q_taken.detach() * mask).sum() / mask.sum().clamp(min=1)
            ),
            "grad/norm": float(grad_norm),
        }

    def _conservative_penalty(
        self,
        states: dict[str, torch.Tensor],
        q_all: torch.Tensor,
        q_taken: torch.Tensor,
        actions: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """CQL(H); optionally repeat-weighted, tempered, plus a new-products term."""
        config = self.config
        plain = (
            config.cql_repeat_weight == 1.0
            and config.cql_temperature == 1.0
            and config.cql_new_alpha == 0.0
            and config.cql_history_alpha == 0.0
        )
        if plain:
            return cql_penalty(q_all, q_taken, mask)
        history = states["history_items"]
        bought_before = (actions.unsqueeze(2) == history.unsqueeze(1)).any(2).float()
        weights = mask * (1.0 + (config.cql_repeat_weight - 1.0) * bought_before)
        penalty = weighted_cql_penalty(q_all, q_taken, weights, config.cql_temperature)
        if config.cql_new_alpha == 0.0 and config.cql_history_alpha == 0.0:
            return penalty
        n_items = q_all.shape[1]
        seen = torch.zeros(
            len(q_all), n_items + 1, dtype=torch.bool, device=q_all.device
        )
        seen.scatter_(1, history, True)
        seen = seen[:, :n_items]
        if config.cql_history_alpha > 0:
            penalty = penalty + config.cql_history_alpha * weighted_cql_penalty(
                q_all,
                q_taken,
                mask * bought_before,
                config.cql_temperature,
                excluded=~seen,
            )
        if config.cql_new_alpha > 0:
            penalty = penalty + config.cql_new_alpha * weighted_cql_penalty(
                q_all,
                q_taken,
                mask * (1.0 - bought_before),
                config.cql_temperature,
                excluded=seen,
            )
        return penalty

    @torch.no_grad()
    def update_target(self) -> None:
        """Blend the online weights into the target network (copy when polyak=1)."""
        tau = self.config.polyak
        for target, online in zip(
            self.target.parameters(), self.online.parameters(), strict=True
        ):
            target.mul_(1.0 - tau).add_(online, alpha=tau)

    @torch.no_grad()
    def update_average(self) -> None:
        """Move the kept average of the online weights one step towards them."""
        if self.average is None:
            return
        keep = self.config.average_decay
        for average, online in zip(
            self.average.parameters(), self.online.parameters(), strict=True
        ):
            average.mul_(keep).add_(online, alpha=1.0 - keep)

    def policy_network(self) -> QNetwork:
        """Return the network to serve: the weight average if kept, else online."""
        return self.online if self.average is None else self.average

    def save_checkpoint(self, path: Path) -> None:
        """Write the checkpoint atomically: a crash leaves the previous one."""
        state = {
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "average": None if self.average is None else self.average.state_dict(),
            "epoch": self.progress.epoch,
            "step": self.progress.step,
            "history": self.progress.history,
            "rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }
        atomic_torch_save(state, path)

    def load_checkpoint(self, path: Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.average is not None and state.get("average") is not None:
            self.average.load_state_dict(state["average"])
        self.progress = TrainingProgress(
            epoch=state["epoch"], step=state["step"], history=state["history"]
        )
        self.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        logger.info("Resumed training at epoch %d from %s", self.progress.epoch, path)


def atomic_torch_save(obj: object, path: Path) -> None:
    """Save to a temporary file in the same folder, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
