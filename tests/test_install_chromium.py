"""scripts/install-chromium.sh, as ./test.sh runs it first: for a user without root it must let the
rest of the suite run, and say what it could not do."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import ROOT

SCRIPT = str(ROOT / "scripts" / "install-chromium.sh")


def as_a_user_without_root(*command: str) -> list[str]:
    """The command as `nobody` when the tests run as root (CI), else as the current user."""
    if os.geteuid() == 0:
        return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
    return list(command)


def test_without_root_it_says_so_and_lets_the_suite_run() -> None:
    """It used to exit 1, and ./test.sh (set -e) stopped before ruff, mypy and pytest."""
    env = {**os.environ, "CHROMIUM": "/nonexistent/chromium", "CHROMEDRIVER": "/nonexistent/chromedriver"}
    done = subprocess.run(as_a_user_without_root("bash", SCRIPT), env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    if "NOT INSTALLED" not in done.stderr and os.geteuid() != 0:
        assert done.returncode == 0  # this user has passwordless sudo: it installed them
        return
    assert done.returncode == 0, done.stderr
    assert "needs root" in done.stderr and "tests/test_demo_page.py" in done.stderr and "skipped" in done.stderr


def test_present_browsers_are_left_alone() -> None:
    env = {**os.environ, "CHROMIUM": "/bin/sh", "CHROMEDRIVER": "/bin/sh"}
    done = subprocess.run(["bash", SCRIPT], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "are present" in done.stderr
