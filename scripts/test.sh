#!/usr/bin/env bash
# Run the test suite. With no DATABASE_URL the tests use the embedded
# PostgreSQL; pytest arguments pass through (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh
exec .venv/bin/python -m pytest "$@"
