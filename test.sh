#!/usr/bin/env bash
# The whole test suite: ruff, mypy (strict) and pytest against real Redis, RQ workers and TensorFlow.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh trainer,dev >&2
scripts/install-chromium.sh
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/pytest -rs "$@"  # -rs: every skipped test is listed with its reason
