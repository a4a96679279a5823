"""Run one governance audit by hand and print what it found."""

import datetime as dt
from collections import Counter
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Max
from django.utils import timezone
from tqdm import tqdm

from commerce.models import ServedSlate
from governance.models import AuditRun
from governance.services import AUDIT_STAGES, run_audit

FLAGS_LISTED = 20


class Command(BaseCommand):
    help = (
        "Audit the served slates and feedback events of a window: fairness, "
        "exposure, anomalies and quality. Stores the metrics, raises flags into "
        "the review queue and prints a summary. Without --since and --until, "
        "audits the AUDIT_WINDOW_HOURS before the latest served slate."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since",
            type=parse_moment,
            help="start, an ISO date or date-time (local time when naive)",
        )
        parser.add_argument(
            "--until", type=parse_moment, help="end (excluded), same format"
        )
        parser.add_argument(
            "--hours",
            type=float,
            help="window length when --since is not given (default AUDIT_WINDOW_HOURS)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        since, until = self._window(
            options["since"],
            options["until"],
            options["hours"] or settings.AUDIT_WINDOW_HOURS,
        )
        with tqdm(
            total=len(AUDIT_STAGES),
            desc="Auditing",
            unit="stage",
            disable=options["verbosity"] < 1,
        ) as progress:

            def on_progress(stage: str) -> None:
                progress.set_postfix_str(f"{stage} done")
                progress.update(1)

            audit_run = run_audit(
                since=since,
                until=until,
                triggered_by="manage.py run_audit",
                on_progress=on_progress,
            )
        self.stdout.write(format_summary(audit_run))

    def _window(
        self, since: dt.datetime | None, until: dt.datetime | None, hours: float
    ) -> tuple[dt.datetime, dt.datetime]:
        if until is None:
            if since is not None:
                until = timezone.now()
            else:
                latest = ServedSlate.objects.aggregate(latest=Max("created_at"))[
                    "latest"
                ]
                if latest is None:
                    raise CommandError(
                        "No slate has been served; give --since and --until."
                    )
                # The window ends just after the latest slate, so it holds it.
                until = latest + dt.timedelta(microseconds=1)
        since = since or until - dt.timedelta(hours=hours)
        if since >= until:
            raise CommandError(f"--since ({since}) must be before --until ({until}).")
        return since, until


def parse_moment(text: str) -> dt.datetime:
    """An ISO date or date-time; naive ones are read in the current time zone."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as error:
        raise CommandError(f"{text!r} is not an ISO date or date-time.") from error
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


def format_summary(audit_run: AuditRun) -> str:
    """The audit's main figures and its flags, as a plain-text table."""
    metrics = audit_run.metrics
    lines = [
        f"Audit {audit_run.pk} {audit_run.status}: "
        f"{audit_run.window_start:%Y-%m-%d %H:%M} to "
        f"{audit_run.window_end:%Y-%m-%d %H:%M}",
        "",
    ]
    rows = [
        ("slates", f"{audit_run.slate_count:,}"),
        ("slate items", f"{audit_run.slate_item_count:,}"),
        ("events", f"{audit_run.event_count:,}"),
        *_fairness_rows(metrics.get("fairness", {})),
        *_exposure_rows(metrics.get("exposure", {})),
        *_anomaly_rows(metrics.get("anomalies", {})),
        *_quality_rows(metrics.get("quality", {})),
        (
            "seconds",
            ", ".join(
                f"{stage} {seconds:.1f}"
                for stage, seconds in metrics.get("seconds", {}).items()
            ),
        ),
    ]
    width = max(len(name) for name, _ in rows)
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]

    flags = list(audit_run.flags.order_by("rule", "id"))
    lines += ["", f"Flags: {len(flags)}"]
    for (rule, severity), count in sorted(
        Counter((flag.rule, flag.severity) for flag in flags).items()
    ):
        lines.append(f"  {rule:<32} {severity:<8} {count:>6}")
    if flags:
        lines.append("")
    for flag in flags[:FLAGS_LISTED]:
        lines.append(
            f"  [{flag.severity}] {flag.rule} {flag.target_type}:{flag.target_id} "
            f"- {flag.summary}"
        )
    if len(flags) > FLAGS_LISTED:
        lines.append(f"  ... and {len(flags) - FLAGS_LISTED} more")
    return "\n".join(lines)


def _figure(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _fairness_rows(fairness: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for attribute, found in fairness.get("attributes", {}).items():
        rows.append(
            (
                f"fairness {attribute}: groups",
                f"{len(found['groups'])} ({found['missing_slates']:,} slates "
                "without a value)",
            )
        )
        for name in ("ctr", "conversion", "hit_rate"):
            disparity = found[name]
            worst = (
                f" (worst {disparity['worst_group']})"
                if disparity["worst_group"]
                else f" ({disparity['note']})"
            )
            rows.append(
                (
                    f"fairness {attribute}: {name} difference / ratio",
                    f"{_figure(disparity['difference'])} / "
                    f"{_figure(disparity['ratio'])}{worst}",
                )
            )
    return rows


def _exposure_rows(exposure: dict[str, Any]) -> list[tuple[str, str]]:
    if not exposure:
        return []
    return [
        (
            "exposure: coverage",
            f"{_figure(exposure['coverage'])} ({exposure['products_shown']:,} of "
            f"{exposure['catalogue_size']:,} products)",
        ),
        ("exposure: gini", _figure(exposure["gini"])),
        ("exposure: exposure-merit gap", _figure(exposure["exposure_merit_gap"])),
        (
            "exposure: avg recommended popularity",
            f"{_figure(exposure['avg_recommended_popularity'], '.2f')} orders "
            f"(lift {_figure(exposure['popularity_lift'], '.2f')})",
        ),
        ("exposure: merchants", f"{exposure['merchants']:,}"),
    ]


def _anomaly_rows(anomalies: dict[str, Any]) -> list[tuple[str, str]]:
    if not anomalies:
        return []
    bursts = anomalies["bursts"]
    return [
        *(
            (
                f"anomalies: {target} bursts",
                f"{found['burst_buckets']} buckets, "
                f"max z {_figure(found['max_z'], '.1f')}",
            )
            for target, found in bursts.items()
        ),
        (
            "anomalies: unmatched click share",
            _figure(anomalies["bots"]["unmatched_click_share"]),
        ),
        (
            "anomalies: products returned after purchase",
            _figure(anomalies["purchase_returns"]["returned_share"]),
        ),
    ]


def _quality_rows(quality: dict[str, Any]) -> list[tuple[str, str]]:
    if not quality:
        return []
    return [
        ("quality: return rate", _figure(quality["return_rate"])),
        ("quality: average rating", _figure(quality["avg_rating"], ".2f")),
        (
            "quality: poor products / their exposure share",
            f"{quality['poor_quality_products']:,} / "
            f"{_figure(quality['poor_quality_exposure_share'])}",
        ),
        ("quality: over-promoted products", f"{quality['over_promoted_products']:,}"),
    ]
