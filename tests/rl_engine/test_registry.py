"""Embedding cache, policy training and the registry, on the real first week."""

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from commerce.models import Product
from governance.models import GovernanceEvent
from rl_engine.errors import (
    ArtifactIntegrityError,
    PolicyGateError,
    PolicyStateError,
)
from rl_engine.models import PolicyStatus, PolicyVersion, ProductEmbedding
from rl_engine.services import (
    embed_products,
    load_policy,
    promote_policy,
    promotion_gate,
    rollback_policy,
    train_policy_version,
)
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db

SMALL = {
    "epochs": 1,
    "batch_size": 64,
    "max_actions": 16,
    "deterministic": True,
    "policy": {
        "hidden": 8,
        "sequence_length": 10,
        "max_history_items": 32,
        "max_recent_items": 32,
        "neighbours": 20,
    },
}
BEFORE = dt.datetime(2010, 12, 6)


@pytest.fixture
def artifact_dir(settings, tmp_path) -> Path:
    settings.POLICY_ARTIFACT_DIR = tmp_path / "policies"
    return settings.POLICY_ARTIFACT_DIR


@pytest.fixture
def first_week(import_file, first_week_path) -> None:
    import_file(first_week_path)


def train(**overrides: Any) -> PolicyVersion:
    return train_policy_version(before=BEFORE, config_overrides={**SMALL, **overrides})


def evaluation(policy_all: float, policy_new: float) -> dict[str, Any]:
    """A stored evaluation report, shaped as evaluate_policy_version writes it."""

    def scores(all_items: float, new_items: float) -> dict[str, Any]:
        return {"all": {"ndcg@10": all_items}, "new": {"ndcg@10": new_items}}

    return {
        "validation": {
            "results": {
                "blend": scores(0.25, 0.06),
                "item_knn": scores(0.15, 0.07),
                "policy": scores(policy_all, policy_new),
            }
        }
    }


def test_products_are_embedded_once_per_text(settings):
    products = ProductFactory.create_batch(3)

    first = embed_products()
    second = embed_products()
    products[0].title = "Blue glass vase"
    products[0].save()
    third = embed_products()

    assert (first.embedded, second.embedded, third.embedded) == (3, 0, 1)
    assert second.cached == 3
    assert ProductEmbedding.objects.count() == 4
    stored = ProductEmbedding.objects.get(text_hash=products[0].text_hash)
    assert stored.as_array().shape == (384,)


def test_training_registers_a_candidate_with_a_checked_artifact(
    first_week, artifact_dir
):
    version = train()

    assert version.status == PolicyStatus.CANDIDATE
    assert version.transitions == 93
    assert Path(version.artifact_path).parent == artifact_dir
    assert version.metrics["training"][0]["loss/td"] > 0
    assert version.trained_before.date() == dt.date(2010, 12, 6)
    assert GovernanceEvent.objects.filter(
        action="policy.registered", target_id=version.label
    ).exists()
    policy = load_policy(version)
    assert (
        len(policy.item_ids)
        == Product.objects.filter(events__customer__isnull=False).distinct().count()
        or len(policy.item_ids) > 0
    )
    # No checkpoint is left behind once the version is registered.
    assert not any((artifact_dir / "checkpoints").glob("*.pt"))

    Path(version.artifact_path).write_bytes(b"tampered")
    with pytest.raises(ArtifactIntegrityError):
        load_policy(version)


def test_a_crash_mid_training_registers_nothing_and_a_rerun_resumes(
    first_week, artifact_dir
):
    def crash(epoch: int, metrics: dict[str, float]) -> None:
        raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        train_policy_version(
            before=BEFORE, config_overrides={**SMALL, "epochs": 2}, on_epoch=crash
        )

    assert PolicyVersion.objects.count() == 0
    assert list(artifact_dir.glob("*.pt")) == []
    assert len(list((artifact_dir / "checkpoints").glob("*.pt"))) == 1

    resumed_epochs = []
    version = train_policy_version(
        before=BEFORE,
        config_overrides={**SMALL, "epochs": 2},
        on_epoch=lambda epoch, metrics: resumed_epochs.append(epoch),
    )

    assert resumed_epochs == [2]
    assert len(version.metrics["training"]) == 2
    assert PolicyVersion.objects.count() == 1


def test_the_gate_refuses_a_policy_below_the_best_baseline(first_week, artifact_dir):
    version = train()

    with pytest.raises(PolicyGateError, match="not been evaluated"):
        promote_policy(version=version, actor=None, reason="weekly retrain")

    version.metrics = {**version.metrics, "evaluation": evaluation(0.26, 0.065)}
    verdict = promotion_gate(version)
    assert verdict["passed"] is False
    assert verdict["checks"]["all"]["passed"] is True
    assert verdict["checks"]["new"]["best_baseline"] == 0.07
    with pytest.raises(PolicyGateError, match=r"new: policy NDCG@10 0\.0650"):
        promote_policy(version=version, actor=None, reason="weekly retrain")
    version.save()
    with pytest.raises(CommandError, match=rf"promote_policy {version.label} --force"):
        call_command("promote_policy", version.label, "--reason", "weekly retrain")

    version.metrics = {**version.metrics, "evaluation": evaluation(0.26, 0.071)}
    assert promotion_gate(version)["passed"] is True


def test_promotion_and_rollback_switch_the_live_version_and_are_logged(
    first_week, artifact_dir, django_user_model
):
    reviewer = django_user_model.objects.create_user("ops")
    first, second = train(), train(seed=8)
    for version in (first, second):
        version.metrics = {**version.metrics, "evaluation": evaluation(0.3, 0.08)}
        version.save()

    promote_policy(version=first, actor=reviewer, reason="first policy")
    promote_policy(version=second, actor=reviewer, reason="better recall")
    first.refresh_from_db()
    assert first.status == PolicyStatus.RETIRED
    assert PolicyVersion.objects.get(status=PolicyStatus.LIVE) == second

    restored = rollback_policy(actor=reviewer, reason="complaints about slate quality")

    assert restored == first
    second.refresh_from_db()
    assert second.status == PolicyStatus.RETIRED
    log = GovernanceEvent.objects.filter(target_type="policy_version").order_by("id")
    assert [
        (e.action, e.target_id) for e in log if e.action != "policy.registered"
    ] == [
        ("policy.promoted", first.label),
        ("policy.promoted", second.label),
        ("policy.rolled_back", first.label),
    ]
    rollback = log.get(action="policy.rolled_back")
    assert rollback.actor == reviewer
    assert rollback.reason == "complaints about slate quality"
    assert rollback.before == {"live": second.label}


def test_forcing_past_the_gate_needs_a_reason_and_is_recorded(first_week, artifact_dir):
    version = train()

    with pytest.raises(PolicyStateError, match="needs a reason"):
        promote_policy(version=version, actor=None, reason=" ", force=True)
    promote_policy(version=version, actor=None, reason="bootstrap", force=True)

    event = GovernanceEvent.objects.get(action="policy.promoted")
    assert event.after is not None
    assert event.after["forced"] is True
    assert event.after["gate"]["passed"] is False
    with pytest.raises(PolicyStateError, match="nothing to roll back"):
        rollback_policy(actor=None, reason="test")


def test_train_policy_command_reports_the_new_candidate(
    first_week, artifact_dir, capsys
):
    call_command(
        "train_policy",
        "--before",
        "2010-12-06",
        "--config",
        '{"epochs": 1}',
        verbosity=1,
    )

    printed = capsys.readouterr().out
    version = PolicyVersion.objects.get()
    assert f"Registered candidate {version.label}" in printed
    assert "epoch 1: loss/td" in printed
