"""Audits of served slates and feedback events, as pure computation.

Each section reads a window's log as pandas frames (``AuditLog``) and the
thresholds (``AuditThresholds``), and returns JSON-ready metrics and the
findings a person should review (``SectionResult``). Nothing here touches the
database or Django: ``governance.selectors.audit_log`` loads the log,
``sections.run_sections`` runs every section over it, and
``governance.services.run_audit`` stores what they found.

- ``fairness``: click-through, conversion and hit rate per customer group.
- ``exposure``: position-weighted exposure per product and merchant against
  merit, Gini, catalogue coverage, average recommended popularity.
- ``anomalies``: bursts, bot-like customers, purchase-then-return customers.
- ``quality``: return rates, ratings, and over-promotion of poor products.
"""
