"""Audits, review queue, overrides and the append-only governance event log."""
