"""The shop REST API, version 1."""
