"""Losses of offline Double DQN with a conservative penalty.

The targets follow Double DQN (van Hasselt et al., 2016): the online network
picks the next action, the target network values it. The penalty is CQL(H)
(Kumar et al., 2020): the log-sum-exp of Q over every product minus the mean Q
of the logged actions. Learning from a log means most products were never
tried in a state; without the penalty their Q-values are unconstrained and the
max in the target chases them. Because the Q-head scores the whole catalogue
in one pass, the log-sum-exp is exact rather than sampled.
"""

import torch
import torch.nn.functional as F


def double_dqn_targets(
    rewards: torch.Tensor,
    done: torch.Tensor,
    next_q_online: torch.Tensor,
    next_q_target: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """Return r + gamma * (1 - done) * Q_target(s', argmax_a Q_online(s', a)).

    ``rewards`` is (batch, actions); the Q tensors are (batch, products). The
    next state is shared by every action of a row.
    """
    best_next = next_q_online.argmax(dim=1, keepdim=True)
    next_value = next_q_target.gather(1, best_next).squeeze(1)
    return rewards + gamma * ((1.0 - done) * next_value).unsqueeze(1)


def td_loss(
    q_taken: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean Huber loss over the real (unmasked) actions."""
    losses = F.smooth_l1_loss(q_taken, targets.detach(), reduction="none")
    return (losses * mask).sum() / mask.sum().clamp(min=1.0)


def cql_penalty(
    q_all: torch.Tensor, q_taken: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean over states of logsumexp_a Q(s, a) minus the mean logged Q(s, a)."""
    logged = (q_taken * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return (torch.logsumexp(q_all, dim=1) - logged).mean()


def weighted_cql_penalty(
    q_all: torch.Tensor,
    q_taken: torch.Tensor,
    weights: torch.Tensor,
    temperature: float = 1.0,
    excluded: torch.Tensor | None = None,
) -> torch.Tensor:
    """CQL(H) with a tempered log-sum-exp and weighted logged actions.

    Mean over states of ``temperature * logsumexp(Q / temperature)`` minus the
    ``weights``-weighted mean of the logged Q-values. ``weights`` is zero on
    padding; with unit weights and temperature 1 it equals :func:`cql_penalty`.
    ``excluded`` (batch, products), when given, drops products from the
    log-sum-exp, so the penalty ranks only the remaining ones; states whose
    weights are all zero do not count.
    """
    total = weights.sum(dim=1)
    logged = (q_taken * weights).sum(dim=1) / total.clamp(min=1e-6)
    scaled = q_all / temperature
    if excluded is not None:
        scaled = scaled.masked_fill(excluded, -1e9)
    soft_max = temperature * torch.logsumexp(scaled, dim=1)
    counted = (total > 0).float()
    gaps = torch.where(total > 0, soft_max - logged, torch.zeros_like(logged))
    return gaps.sum() / counted.sum().clamp(min=1.0)
