"""Worker metrics: each process serves Prometheus text on its own port, scraped and parsed here."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

import redis
from prometheus_client.parser import text_string_to_metric_families

from producer import runs
from producer.following import follow
from producer.redis_server import free_port
from tests.conftest import ROOT, MakeFolder, WorkerPool, send_folder

StartWorkers = Callable[..., WorkerPool]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """All samples of one /metrics page, keyed by name and sorted labels."""
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
            break
        except OSError:
            assert time.monotonic() < deadline, f"no metrics endpoint on port {port}"
            time.sleep(0.1)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def test_metrics_count_images_batches_errors_and_model(connection: redis.Redis, default_version: str,
                                                       start_workers: StartWorkers,
                                                       digit_folder: MakeFolder) -> None:
    folder, _ = digit_folder(60)
    (folder / "broken.png").write_bytes(b"not an image")
    port = free_port()
    start_workers(2, ["--metrics-port", str(port)])
    settings = runs.Settings(batch_size=10)
    run_id = send_folder(connection, folder, settings)
    assert len(list(follow(connection, run_id))) == 61

    deadline = time.monotonic() + 10  # a worker counts a batch just after storing its results
    while True:
        pages = [scrape(port), scrape(port + 1)]
        ok = sum(total(p, "digits_images_total", model_version=default_version, outcome="ok") for p in pages)
        errors = sum(total(p, "digits_image_errors_total", model_version=default_version) for p in pages)
        batches = sum(total(p, "digits_batches_total", model_version=default_version) for p in pages)
        sizes = sum(total(p, "digits_batch_images_sum", model_version=default_version) for p in pages)
        timed = sum(total(p, "digits_batch_seconds_count", model_version=default_version) for p in pages)
        if batches == 7 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (ok, errors, batches, sizes, timed) == (60, 1, 7, 61, 7)
    for page in pages:
        if total(page, "digits_batches_total") > 0:
            assert total(page, "digits_model_loaded", model_version=default_version,
                         architecture="dense1024-dense10") == 1


def test_a_metrics_port_in_use_is_refused_at_start(redis_url: str) -> None:
    """A taken port (9100, the old example, is node_exporter's) made every worker process crash at
    start, respawned forever, while the supervisor looked alive."""
    with socket.socket() as squatter:
        squatter.bind(("0.0.0.0", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "worker", "--count", "2", "--metrics-port", str(port),
                               "--redis-url", redis_url], cwd=ROOT, capture_output=True, text=True, timeout=30,
                              check=False)
    assert done.returncode == 1
    assert f"metrics port {port} is in use" in done.stderr and "Traceback" not in done.stderr
