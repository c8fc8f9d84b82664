#!/usr/bin/env bash
# Install Debian's chromium and chromium-driver (for the browser demo's test), once.
# Does nothing if /usr/bin/chromium and /usr/bin/chromedriver are both there. Non-interactive;
# needs root (as in CI) or passwordless sudo; without either it says so and exits 0, so that
# ./test.sh runs everything else. Says what it does on stderr.
set -euo pipefail

chromium="${CHROMIUM:-/usr/bin/chromium}" chromedriver="${CHROMEDRIVER:-/usr/bin/chromedriver}"
if [ -x "$chromium" ] && [ -x "$chromedriver" ]; then
  echo "install-chromium: $chromium and $chromedriver are present" >&2
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  # Not an error for ./test.sh: everything else runs, and pytest's summary lists the browser tests as
  # skipped for this reason. As root (CI), a failed install below is an error.
  echo "install-chromium: NOT INSTALLED: apt-get install chromium chromium-driver needs root, and this user" \
       "($(id -un)) has no passwordless sudo. The browser tests (tests/test_demo_page.py, tests/test_review.py) will be skipped;" \
       "run 'sudo scripts/install-chromium.sh' to include them." >&2
  exit 0
fi
command -v apt-get >/dev/null || { echo "install-chromium: no apt-get on this machine (Debian/Ubuntu only)" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
apt=("${sudo[@]}" apt-get -y -q -o Dpkg::Use-Pty=0)
# Refresh the package lists only when they are missing or do not know chromium yet.
if ! apt-cache show chromium-driver >/dev/null 2>&1; then
  echo "install-chromium: apt-get update" >&2
  "${apt[@]}" update >&2
fi
echo "install-chromium: apt-get install --no-install-recommends chromium chromium-driver" >&2
if ! "${apt[@]}" install --no-install-recommends chromium chromium-driver >&2; then
  echo "install-chromium: install failed; retrying after apt-get update" >&2
  "${apt[@]}" update >&2
  "${apt[@]}" install --no-install-recommends chromium chromium-driver >&2
fi
for binary in /usr/bin/chromium /usr/bin/chromedriver; do
  [ -x "$binary" ] || { echo "install-chromium: $binary is still missing after the install" >&2; exit 1; }
done
echo "install-chromium: $(/usr/bin/chromium --version 2>/dev/null || echo chromium installed)" >&2
