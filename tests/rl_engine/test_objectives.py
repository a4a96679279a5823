"""Double DQN targets and losses against values worked by hand."""

import math

import pytest
import torch

from rl_engine.core.objectives import cql_penalty, double_dqn_targets, td_loss


def test_online_network_picks_the_action_and_target_network_values_it():
    rewards = torch.tensor([[1.0, 0.5]])
    done = torch.tensor([0.0])
    next_q_online = torch.tensor([[0.5, 2.0, 1.0]])  # argmax: action 1
    next_q_target = torch.tensor([[3.0, 0.25, 4.0]])  # plain DQN would take 4.0

    targets = double_dqn_targets(rewards, done, next_q_online, next_q_target, 0.9)

    # r + 0.9 * Q_target(s', 1) = r + 0.225, for each logged action.
    assert targets[0].tolist() == pytest.approx([1.225, 0.725])


def test_a_terminal_step_keeps_the_reward_alone():
    targets = double_dqn_targets(
        torch.tensor([[1.0], [-1.0]]),
        torch.tensor([1.0, 0.0]),
        torch.tensor([[0.0, 2.0], [1.0, 0.0]]),
        torch.tensor([[5.0, 7.0], [3.0, 9.0]]),
        gamma=0.5,
    )

    assert targets[:, 0].tolist() == pytest.approx([1.0, -1.0 + 0.5 * 3.0])


def test_td_loss_is_huber_over_unmasked_actions_only():
    q_taken = torch.tensor([[1.0, 5.0], [0.0, 0.0]])
    targets = torch.tensor([[1.5, 0.0], [3.0, 0.0]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]])

    # Huber(0.5) = 0.5 * 0.25 = 0.125; Huber(3) = 3 - 0.5 = 2.5; mean of two.
    assert td_loss(q_taken, targets, mask).item() == pytest.approx((0.125 + 2.5) / 2)


def test_cql_penalty_is_logsumexp_minus_the_mean_logged_q():
    q_all = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    q_taken = torch.tensor([[3.0, 1.0], [0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])

    first = math.log(math.exp(1) + math.exp(2) + math.exp(3)) - 2.0
    second = math.log(3.0) - 0.0
    assert cql_penalty(q_all, q_taken, mask).item() == pytest.approx(
        (first + second) / 2, rel=1e-6
    )
