"""Evaluate a policy version and the baselines by the offline protocol."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rl_engine.core.evaluation import CUTOFFS
from rl_engine.core.protocol import TARGETS
from rl_engine.errors import PolicyError
from rl_engine.models import PolicyVersion
from rl_engine.selectors import live_policy_version
from rl_engine.services import evaluate_policy_version

METRICS = [f"{name}@{k}" for k in CUTOFFS for name in ("hr", "recall", "ndcg")]


class Command(BaseCommand):
    help = (
        "Evaluate a policy version (default: the live one, else the newest) "
        "against the baselines: HR, Recall and NDCG at 10 and 20."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--policy", dest="label", help="policy version label")
        parser.add_argument(
            "--split",
            choices=["validation", "test"],
            help="default: the first period after the version's training data",
        )
        parser.add_argument("--json", action="store_true", help="print JSON only")

    def handle(self, *args: Any, **options: Any) -> None:
        version = self._version(options["label"])
        try:
            report = evaluate_policy_version(version=version, split=options["split"])
        except PolicyError as error:
            raise CommandError(f"[{error.code}] {error.message}") from error
        if options["json"]:
            self.stdout.write(json.dumps(report))
            return
        self.stdout.write(format_report(report))

    def _version(self, label: str | None) -> PolicyVersion:
        if label:
            try:
                return PolicyVersion.objects.get(label=label)
            except PolicyVersion.DoesNotExist as error:
                raise CommandError(f"No policy version {label!r}.") from error
        version = live_policy_version() or PolicyVersion.objects.first()
        if version is None:
            raise CommandError("No policy version is registered; run train_policy.")
        return version


def format_report(report: dict[str, Any]) -> str:
    """Lay the report out as one table per target, models side by side."""
    lines = [
        f"{report['protocol']} on {report['split']}, policy {report['policy_version']}"
    ]
    interval_key = "ndcg@10_difference_ci95"
    for target in TARGETS:
        lines.append("")
        lines.append(f"{target} items ({report['cases'][target]:,} cases)")
        lines.append(f"{'model':<12}" + "".join(f"{m:>11}" for m in METRICS))
        for name, results in report["results"].items():
            row = results[target]
            lines.append(f"{name:<12}" + "".join(f"{row[m]:>11.4f}" for m in METRICS))
        if interval_key in report:
            low, high = report[interval_key][target]
            lines.append(
                f"policy minus best baseline, NDCG@10: 95% CI [{low:+.4f}, {high:+.4f}]"
            )
    return "\n".join(lines)
