"""The browser tests use the merchant portal's fixtures: a small policy trained
on the sample, live, with real MiniLM text vectors."""

from tests.merchants.conftest import (  # noqa: F401 (fixtures, found by name)
    embedded_sample,
    live_version,
    quick_password_hashing,
    sample_vectors,
)
