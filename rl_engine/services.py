"""Writes of the RL engine: embeddings, policy versions, promotion, rollback."""

import datetime as dt
import hashlib
import json
import logging
import uuid
import zoneinfo
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from commerce.models import Product
from commerce.services import file_sha256
from governance.selectors import training_exclusions
from governance.services import record_governance_event
from rl_engine.core.baselines import protocol_baselines
from rl_engine.core.candidates import CandidateSearch
from rl_engine.core.config import TrainingConfig
from rl_engine.core.evaluation import evaluate_log
from rl_engine.core.policy import DQNPolicy, train_policy
from rl_engine.core.protocol import (
    BasketLog,
    CaseBatch,
    PeriodName,
    SplitBoundaries,
    build_baskets,
)
from rl_engine.core.text_encoder import TextEncoder
from rl_engine.core.trainer import EpochCallback
from rl_engine.errors import (
    ArtifactIntegrityError,
    PolicyGateError,
    PolicyStateError,
    TrainingDataError,
)
from rl_engine.models import PolicyStatus, PolicyVersion, ProductEmbedding
from rl_engine.selectors import (
    embedding_model_name,
    embedding_model_path,
    purchase_lines,
    returned_items,
    text_vectors,
)

logger = logging.getLogger(__name__)

SYSTEM_ACTOR = "rl_engine"
MIN_BASKETS = 2


@dataclass(frozen=True)
class EmbeddingResult:
    embedded: int
    cached: int


def embed_products(
    *,
    batch_size: int | None = None,
    encoder: TextEncoder | None = None,
    on_batch: Callable[[int], object] | None = None,
    on_start: Callable[[int], object] | None = None,
) -> EmbeddingResult:
    """Embed every product text that has no vector for the configured model yet.

    Vectors are keyed by the hash of the text, so a product is embedded again
    only when its title or description changes.
    """
    model = embedding_model_name()
    known = ProductEmbedding.objects.filter(model_name=model).values("text_hash")
    pending = (
        Product.objects.exclude(text_hash__in=known)
        .order_by("text_hash", "id")
        .distinct("text_hash")
        .values_list("text_hash", "title", "description")
    )
    texts = {
        text_hash: _product_text(title, body) for text_hash, title, body in pending
    }
    cached = Product.objects.values("text_hash").distinct().count() - len(texts)
    if on_start is not None:
        on_start(len(texts))
    if not texts:
        return EmbeddingResult(embedded=0, cached=cached)

    encoder = encoder or TextEncoder(
        embedding_model_path(), device=settings.TORCH_DEVICE or None
    )
    hashes = list(texts)
    vectors = encoder.encode(
        [texts[h] for h in hashes],
        batch_size=batch_size or settings.EMBEDDING_BATCH_SIZE,
        on_batch=on_batch,
    )
    ProductEmbedding.objects.bulk_create(
        [
            ProductEmbedding(
                text_hash=text_hash,
                model_name=model,
                dimension=vector.shape[0],
                vector=vector.astype("<f4").tobytes(),
            )
            for text_hash, vector in zip(hashes, vectors, strict=True)
        ],
        ignore_conflicts=True,
        batch_size=1000,
    )
    logger.info(
        "Embedded %d product texts (%d cached) with %s",
        len(hashes),
        cached,
        model,
        extra={"embedded": len(hashes), "cached": cached},
    )
    return EmbeddingResult(embedded=len(hashes), cached=cached)


def _product_text(title: str, description: str) -> str:
    return f"{title}. {description}" if description else title


def training_config(overrides: dict[str, Any] | None = None) -> TrainingConfig:
    """Return the configured TrainingConfig with ``overrides`` applied on top."""
    values = {**settings.POLICY_TRAINING_CONFIG, **(overrides or {})}
    if settings.TORCH_DEVICE and "device" not in values:
        values["device"] = settings.TORCH_DEVICE
    return TrainingConfig.from_dict(values)


def load_basket_log(*, excluded_customers: Collection[str] = ()) -> BasketLog:
    """Build the basket log from the stored purchases, less excluded customers'."""
    lines = purchase_lines(excluded_customers=excluded_customers)
    if lines["basket"].nunique() < MIN_BASKETS:
        raise TrainingDataError(
            f"Need at least {MIN_BASKETS} purchase baskets of known customers; "
            f"the store has {lines['basket'].nunique()}."
        )
    return build_baskets(lines)


def train_policy_version(
    *,
    before: dt.datetime | None = None,
    config_overrides: dict[str, Any] | None = None,
    actor: User | None = None,
    on_epoch: EpochCallback | None = None,
) -> PolicyVersion:
    """Train a policy on the purchases before ``before`` and register a candidate.

    The artifact is written atomically before the version row exists, and the
    row and its governance event are written in one transaction, so a crash
    leaves at most an unreferenced file, never a version without its artifact.
    A checkpoint keyed by the run's inputs lets a repeated run resume.
    Customers under a training exclusion override are not learned from.
    """
    config = training_config(config_overrides)
    excluded = sorted(training_exclusions())
    log = load_basket_log(excluded_customers=excluded)
    boundary = _boundary(log, before)
    if not log.before(boundary).any():
        raise TrainingDataError(f"No purchases before {boundary}.")
    if excluded:
        logger.info(
            "Training without the events of %d excluded customers",
            len(excluded),
            extra={"excluded_customers": len(excluded)},
        )

    artifact_dir = Path(settings.POLICY_ARTIFACT_DIR)
    run_key = _run_key(config, boundary, log, excluded)
    checkpoint = artifact_dir / "checkpoints" / f"{run_key}.pt"
    policy = train_policy(
        log,
        boundary,
        text_vectors=text_vectors(log.vocabulary.ids),
        config=config,
        returned=returned_items(log),
        on_epoch=on_epoch,
        checkpoint_path=checkpoint,
    )
    label = f"v{timezone.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    artifact = artifact_dir / f"{label}.pt"
    policy.save(artifact)

    with transaction.atomic():
        version = PolicyVersion.objects.create(
            label=label,
            config=config.as_dict(),
            data_start=_aware(log.times.min()),
            trained_before=_aware(boundary),
            transitions=policy.transitions,
            metrics={
                "training": policy.metrics,
                "excluded_customers": excluded,
            },
            artifact_path=str(artifact),
            artifact_sha256=file_sha256(artifact),
            embedding_model=embedding_model_name(),
            created_by=actor,
        )
        record_governance_event(
            action="policy.registered",
            target_type="policy_version",
            target_id=label,
            actor=actor,
            actor_label="" if actor else SYSTEM_ACTOR,
            after={"status": version.status, "trained_before": str(boundary)},
        )
    checkpoint.unlink(missing_ok=True)
    logger.info(
        "Registered policy %s trained before %s",
        label,
        boundary,
        extra={"policy_version": label},
    )
    return version


def load_policy(version: PolicyVersion) -> DQNPolicy:
    """Load a version's artifact after checking it against the registry."""
    path = Path(version.artifact_path)
    if not path.exists():
        raise ArtifactIntegrityError(f"Artifact of {version.label} is missing: {path}")
    if file_sha256(path) != version.artifact_sha256:
        raise ArtifactIntegrityError(
            f"Artifact of {version.label} does not match its recorded checksum."
        )
    return DQNPolicy.load(
        path,
        device=settings.TORCH_DEVICE or None,
        candidate_search=CandidateSearch(
            min_items=settings.SERVING_INDEX_MIN_ITEMS,
            candidates=settings.SERVING_INDEX_CANDIDATES,
            probes=settings.SERVING_INDEX_PROBES,
        ),
    )


@dataclass
class TrainedPolicy:
    """A registered policy in the evaluation harness: fitted already, never refit."""

    policy: DQNPolicy
    name: str = "policy"

    def fit(self, log: BasketLog, before: np.datetime64) -> None:
        if self.policy.fitted_before > before:
            raise TrainingDataError(
                f"The policy was trained on data up to {self.policy.fitted_before}, "
                f"after the evaluated period's start {before}."
            )
        if not np.array_equal(self.policy.item_ids, log.vocabulary.ids):
            raise TrainingDataError(
                "The store's products changed since the policy was trained; "
                "train a new version to evaluate on the current log."
            )

    def score(self, cases: CaseBatch) -> np.ndarray:
        states = self.policy.encode(cases.log, cases.history, cases.times)
        return self.policy.q_values(states)


def evaluate_policy_version(
    *, version: PolicyVersion, split: PeriodName | None = None
) -> dict[str, Any]:
    """Evaluate a version and the baselines on ``split``; store the report.

    Without a split, the version is evaluated on the first protocol period that
    starts at or after the end of its training data.
    """
    log = load_basket_log()
    policy = load_policy(version)
    split = split or _split_after(policy.fitted_before)
    report = evaluate_log(
        log,
        [*protocol_baselines(), TrainedPolicy(policy)],
        split=split,
        candidate="policy",
    )
    report["policy_version"] = version.label
    scalars = evaluation_scalars(report)
    logger.info(
        "Evaluated %s on %s: eval/all/ndcg@10 %.4f, eval/new/ndcg@10 %.4f",
        version.label,
        split,
        scalars["eval/all/ndcg@10"],
        scalars["eval/new/ndcg@10"],
        extra={"policy_version": version.label, "split": split, **scalars},
    )
    with transaction.atomic():
        locked = PolicyVersion.objects.select_for_update().get(pk=version.pk)
        evaluations = dict(locked.metrics.get("evaluation", {}))
        evaluations[split] = report
        locked.metrics = {**locked.metrics, "evaluation": evaluations}
        locked.save(update_fields=["metrics"])
        record_governance_event(
            action="policy.evaluated",
            target_type="policy_version",
            target_id=version.label,
            actor_label=SYSTEM_ACTOR,
            after={"split": split, "ndcg@10": _ndcg_summary(report)},
        )
    version.metrics = locked.metrics
    return report


def evaluation_scalars(report: dict[str, Any]) -> dict[str, float]:
    """Flatten the policy's results to scalars named like ``eval/all/ndcg@10``."""
    return {
        f"eval/{target}/{metric}": value
        for target, metrics in report["results"]["policy"].items()
        for metric, value in metrics.items()
    }


def promote_policy(
    *,
    version: PolicyVersion,
    actor: User | None,
    reason: str,
    force: bool = False,
) -> PolicyVersion:
    """Make ``version`` live if its evaluation clears the gate; retire the old one.

    ``force`` promotes past a failed gate; the reason and the gate's verdict are
    then kept in the governance log.
    """
    if not reason.strip():
        raise PolicyStateError("A promotion needs a reason.")
    verdict = promotion_gate(version)
    if not verdict["passed"] and not force:
        raise PolicyGateError(verdict["summary"])

    with transaction.atomic():
        candidate = PolicyVersion.objects.select_for_update().get(pk=version.pk)
        if candidate.status == PolicyStatus.LIVE:
            raise PolicyStateError(f"{candidate.label} is already live.")
        previous = (
            PolicyVersion.objects.select_for_update()
            .filter(status=PolicyStatus.LIVE)
            .first()
        )
        if previous is not None:
            previous.status = PolicyStatus.RETIRED
            previous.save(update_fields=["status"])
        candidate.status = PolicyStatus.LIVE
        candidate.promoted_at = timezone.now()
        candidate.save(update_fields=["status", "promoted_at"])
        record_governance_event(
            action="policy.promoted",
            target_type="policy_version",
            target_id=candidate.label,
            actor=actor,
            actor_label="" if actor else SYSTEM_ACTOR,
            before={"live": previous.label if previous else None},
            after={"live": candidate.label, "gate": verdict, "forced": force},
            reason=reason,
        )
    return candidate


def rollback_policy(*, actor: User | None, reason: str) -> PolicyVersion:
    """Retire the live version and make the previously live one live again."""
    if not reason.strip():
        raise PolicyStateError("A rollback needs a reason.")
    with transaction.atomic():
        current = (
            PolicyVersion.objects.select_for_update()
            .filter(status=PolicyStatus.LIVE)
            .first()
        )
        if current is None:
            raise PolicyStateError("No version is live.")
        previous = (
            PolicyVersion.objects.select_for_update()
            .filter(status=PolicyStatus.RETIRED, promoted_at__isnull=False)
            .exclude(pk=current.pk)
            .order_by("-promoted_at")
            .first()
        )
        if previous is None:
            raise PolicyStateError(
                f"{current.label} is the only version ever live; "
                "there is nothing to roll back to."
            )
        current.status = PolicyStatus.RETIRED
        current.save(update_fields=["status"])
        previous.status = PolicyStatus.LIVE
        previous.promoted_at = timezone.now()
        previous.save(update_fields=["status", "promoted_at"])
        record_governance_event(
            action="policy.rolled_back",
            target_type="policy_version",
            target_id=previous.label,
            actor=actor,
            actor_label="" if actor else SYSTEM_ACTOR,
            before={"live": current.label},
            after={"live": previous.label},
            reason=reason,
        )
    return previous


def promotion_gate(version: PolicyVersion) -> dict[str, Any]:
    """Judge a version on its latest evaluation against the best baseline."""
    evaluations = version.metrics.get("evaluation", {})
    if not evaluations:
        return {"passed": False, "summary": f"{version.label} has not been evaluated."}
    split = "validation" if "validation" in evaluations else next(iter(evaluations))
    results = evaluations[split]["results"]
    ratio = settings.POLICY_GATE_MIN_NDCG_RATIO
    checks = {}
    for target in ("all", "new"):
        policy = results["policy"][target]["ndcg@10"]
        best = max(
            scores[target]["ndcg@10"]
            for name, scores in results.items()
            if name != "policy"
        )
        checks[target] = {
            "policy": policy,
            "best_baseline": best,
            "passed": policy >= ratio * best,
        }
    passed = all(check["passed"] for check in checks.values())
    summary = "; ".join(
        f"{target}: policy NDCG@10 {c['policy']:.4f} vs best baseline "
        f"{c['best_baseline']:.4f} x {ratio}"
        for target, c in checks.items()
    )
    return {"passed": passed, "split": split, "checks": checks, "summary": summary}


def _boundary(log: BasketLog, before: dt.datetime | None) -> np.datetime64:
    if before is None:
        return log.times.max() + np.timedelta64(1, "s")
    if timezone.is_aware(before):
        before = timezone.localtime(before, timezone=_evaluation_zone())
    return np.datetime64(before.replace(tzinfo=None), "s")


def _evaluation_zone() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(settings.EVALUATION_TIMEZONE)


def _aware(moment: np.datetime64) -> dt.datetime:
    naive = moment.astype("datetime64[s]").astype(dt.datetime)
    return naive.replace(tzinfo=_evaluation_zone())


def _split_after(fitted_before: np.datetime64) -> PeriodName:
    boundaries = SplitBoundaries()
    if fitted_before <= boundaries.validation_start:
        return "validation"
    if fitted_before <= boundaries.test_start:
        return "test"
    raise TrainingDataError(
        f"The policy was trained on data up to {fitted_before}, which overlaps "
        "every protocol period; train with --before to evaluate it."
    )


def _run_key(
    config: TrainingConfig,
    boundary: np.datetime64,
    log: BasketLog,
    excluded_customers: list[str],
) -> str:
    fingerprint = json.dumps(
        {
            "config": config.as_dict(),
            "before": str(boundary),
            "baskets": log.n_baskets,
            "items": log.n_items,
            "excluded_customers": excluded_customers,
        },
        sort_keys=True,
    )
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:16]


def _ndcg_summary(report: dict[str, Any]) -> dict[str, float]:
    return {
        target: report["results"]["policy"][target]["ndcg@10"]
        for target in ("all", "new")
    }
