"""TLS and ACL end to end against a real redis-server, and secrets kept out of logs and status."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from digits.connection import connect, redact
from digits.registry import DEFAULT_MODEL_DIR
from producer.redis_server import find_binary, free_port
from tests.conftest import ROOT, MakeFolder

PASSWORD = "s3cret-Pa55"


def make_certificates(directory: Path) -> None:
    """A throw-away CA and a server certificate for 127.0.0.1, made with openssl."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=digits-test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "san.ext")


@pytest.fixture
def tls_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server that speaks only TLS, with the default user off and one ACL user."""
    make_certificates(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        [find_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", "server.pem", "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.pem",
         "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
         "--user", "default", "off", "--user", "digits", "on", f">{PASSWORD}", "~*", "&*", "+@all"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"rediss://digits:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}&ssl_cert_reqs=required"
    deadline = time.monotonic() + 10
    while True:
        try:
            connect(url).ping()
            break
        except redis.ConnectionError:
            assert server.poll() is None and time.monotonic() < deadline, "TLS redis-server did not start"
            time.sleep(0.1)
    yield url
    server.terminate()
    server.wait(timeout=10)


def cli(component: str, *args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", component, *args, "--redis-url", url], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_redact_hides_the_password_only() -> None:
    assert redact(f"rediss://digits:{PASSWORD}@host:6380/2") == "rediss://digits:***@host:6380/2"
    assert redact("redis://host:6379/0") == "redis://host:6379/0"


def test_pipeline_over_tls_with_an_acl_user_never_shows_the_password(tls_url: str,
                                                                     digit_folder: MakeFolder) -> None:
    folder, truth = digit_folder(12)
    outputs = []

    published = cli("trainer", "import", str(DEFAULT_MODEL_DIR), "--promote", url=tls_url)
    assert published.returncode == 0, published.stderr
    enqueued = cli("producer", "enqueue", str(folder), "--batch-size", "5", url=tls_url)
    assert enqueued.returncode == 0, enqueued.stderr
    run_id = enqueued.stdout.strip()
    worked = cli("worker", "--burst", "--log-level", "DEBUG", url=tls_url)
    assert worked.returncode == 0, worked.stderr
    results = cli("producer", "results", run_id, "--format", "csv", url=tls_url)
    rows = results.stdout.strip().splitlines()[1:]
    assert len(rows) == len(truth) and all(row.split(",")[1] for row in rows)
    status = cli("producer", "status", run_id, url=tls_url)
    assert status.returncode == 0 and "digits:***@127.0.0.1" in status.stdout
    outputs = [published, enqueued, worked, results, status]
    for done in outputs:
        assert PASSWORD not in done.stdout + done.stderr


def test_wrong_password_and_plain_connection_are_refused(tls_url: str) -> None:
    wrong = cli("producer", "status", url=tls_url.replace(PASSWORD, "guess"))
    assert wrong.returncode != 0 and "guess" not in wrong.stdout + wrong.stderr
    assert "Error: Redis refused the credentials" in wrong.stderr and "Traceback" not in wrong.stderr
    plain = tls_url.replace("rediss://", "redis://").split("?")[0]
    refused = cli("producer", "status", url=plain)
    assert refused.returncode != 0 and PASSWORD not in refused.stdout + refused.stderr
    assert "Error: cannot reach Redis" in refused.stderr and "Traceback" not in refused.stderr
