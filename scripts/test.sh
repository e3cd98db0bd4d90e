#!/usr/bin/env bash
# Install the real services the suite starts (PostgreSQL, HAProxy, a Java runtime for Spark: only
# what is missing, from Debian), the dev extra (which holds the postgres extra, psycopg 3) and the
# local one (it builds llama.cpp's server for the real small models, portable: 15-25 min the
# first time on 2 cores, then reused from its wheelhouse), check that the local model server
# answers a chat completion, then lint, type-check and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services/install.sh
bash scripts/bootstrap.sh dev,local
.venv/bin/python -m tests.support.check_llama
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/pytest "$@"
