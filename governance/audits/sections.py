"""Every section of an audit, run in turn over one log."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from governance.audits import anomalies, exposure, fairness, quality
from governance.audits.findings import Finding, SectionResult
from governance.audits.log import AuditLog
from governance.audits.thresholds import AuditThresholds

Section = Callable[[AuditLog, AuditThresholds], SectionResult]

SECTIONS: dict[str, Section] = {
    "fairness": fairness.audit_fairness,
    "exposure": exposure.audit_exposure,
    "anomalies": anomalies.audit_anomalies,
    "quality": quality.audit_quality,
}


@dataclass(frozen=True)
class AuditOutcome:
    metrics: dict[str, dict[str, Any]]
    """Each section's metrics, by section name."""
    findings: list[Finding]
    seconds: dict[str, float]
    """Each section's compute time."""


def run_sections(
    log: AuditLog,
    thresholds: AuditThresholds,
    on_section: Callable[[str], None] | None = None,
) -> AuditOutcome:
    """Run every section over ``log``; call ``on_section`` as each one ends."""
    metrics: dict[str, dict[str, Any]] = {}
    findings: list[Finding] = []
    seconds: dict[str, float] = {}
    for name, section in SECTIONS.items():
        started = time.perf_counter()
        result = section(log, thresholds)
        seconds[name] = time.perf_counter() - started
        metrics[name] = result.metrics
        findings += result.findings
        if on_section is not None:
            on_section(name)
    return AuditOutcome(metrics=metrics, findings=findings, seconds=seconds)
