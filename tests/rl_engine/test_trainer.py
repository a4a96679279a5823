"""The trainer: target network updates, determinism, checkpoint and resume."""

import contextlib
from pathlib import Path

import numpy as np
import torch

from rl_engine.core.protocol import BasketLog
from rl_engine.core.replay import ReplayBuffer
from rl_engine.core.trainer import DQNTrainer, seed_everything
from rl_engine.core.transitions import TransitionBatch
from tests.rl_engine.conftest import small_network, small_training_config


def filled_buffer(transitions: TransitionBatch) -> ReplayBuffer:
    buffer = ReplayBuffer(capacity=len(transitions))
    buffer.add(transitions)
    return buffer


def parameters(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(left: list[torch.Tensor], right: list[torch.Tensor]) -> bool:
    return all(torch.equal(a, b) for a, b in zip(left, right, strict=True))


def make_trainer(
    log: BasketLog, checkpoint: Path | None = None, **overrides: object
) -> DQNTrainer:
    config = small_training_config(**overrides)
    seed_everything(config.seed, deterministic=True)
    return DQNTrainer(
        small_network(log),
        config,
        device=torch.device("cpu"),
        checkpoint_path=checkpoint,
    )


def test_target_network_changes_only_when_updated(early_log, early_transitions):
    trainer = make_trainer(early_log, target_update_every=1000, polyak=1.0)
    target_before = parameters(trainer.target)
    online_before = parameters(trainer.online)
    batch = filled_buffer(early_transitions).take(np.arange(32))

    trainer.step(batch)
    trainer.step(batch)

    assert not same(parameters(trainer.online), online_before)
    assert same(parameters(trainer.target), target_before)

    trainer.update_target()

    assert same(parameters(trainer.target), parameters(trainer.online))


def test_polyak_update_moves_the_target_part_of_the_way(early_log, early_transitions):
    trainer = make_trainer(early_log, target_update_every=1000, polyak=0.25)
    target_before = parameters(trainer.target)
    trainer.step(filled_buffer(early_transitions).take(np.arange(32)))
    online = parameters(trainer.online)

    trainer.update_target()

    for old, new, towards in zip(
        target_before, parameters(trainer.target), online, strict=True
    ):
        assert torch.allclose(new, 0.75 * old + 0.25 * towards, atol=1e-6)


def test_training_reduces_the_loss_and_is_repeatable(early_log, early_transitions):
    first = make_trainer(early_log, epochs=3)
    history = first.fit(filled_buffer(early_transitions))
    second = make_trainer(early_log, epochs=3)
    repeated = second.fit(filled_buffer(early_transitions))

    assert history == repeated
    assert same(parameters(first.online), parameters(second.online))
    assert history[-1]["loss/total"] < history[0]["loss/total"]
    assert all(np.isfinite(value) for epoch in history for value in epoch.values())


def test_an_interrupted_run_resumes_from_its_checkpoint(
    early_log, early_transitions, tmp_path
):
    checkpoint = tmp_path / "run.pt"
    uninterrupted = make_trainer(early_log, epochs=2)
    uninterrupted.fit(filled_buffer(early_transitions))

    interrupted = make_trainer(early_log, checkpoint, epochs=2)

    def stop_after_first_epoch(epoch: int, metrics: dict[str, float]) -> None:
        raise KeyboardInterrupt

    with contextlib.suppress(KeyboardInterrupt):
        interrupted.fit(
            filled_buffer(early_transitions), on_epoch=stop_after_first_epoch
        )
    assert checkpoint.exists()

    resumed = make_trainer(early_log, checkpoint, epochs=2)
    assert resumed.progress.epoch == 1
    resumed.fit(filled_buffer(early_transitions))

    assert resumed.progress.epoch == 2
    assert same(parameters(resumed.online), parameters(uninterrupted.online))
    assert same(parameters(resumed.target), parameters(uninterrupted.target))
