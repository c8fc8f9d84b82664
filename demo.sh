#!/usr/bin/env bash
# The main job on an embedded default: private Redis, 2 workers, the bundled model and samples.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh >&2
exec .venv/bin/digits-producer demo "$@"
