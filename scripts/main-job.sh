#!/usr/bin/env bash
# Set everything up on a fresh machine and run the main job on the bundled
# Online Retail data. With no DATABASE_URL, the embedded PostgreSQL under
# .data/ is started and used.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh
.venv/bin/python manage.py migrate --noinput
# Static files (admin, Swagger UI) for WhiteNoise to serve when DEBUG is off.
.venv/bin/python manage.py collectstatic --noinput --verbosity 0
.venv/bin/python manage.py run_pipeline "$@"
