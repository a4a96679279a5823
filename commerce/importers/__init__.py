"""Readers that turn a shop's exports into rows ready for the store."""
