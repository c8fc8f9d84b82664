"""TLS and ACL end to end against a real redis-server, and secrets kept out of logs and status."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from digits import keys
from digits.connection import connect, redact
from digits.defaults import REDIS_TIMEOUT
from digits.registry import DEFAULT_MODEL_DIR, Registry
from producer.redis_server import find_binary, free_port
from tests.conftest import ROOT, AclRedis, MakeFolder

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


CLIS = [("producer", "status"), ("trainer", "list"), ("worker", "--burst")]


def answers_one_line(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    """A non-zero exit, and one line on stderr that says what is wrong (besides a worker's INFO
    log lines): no traceback."""
    assert done.returncode != 0, done.stdout + done.stderr
    lines = [line for line in done.stderr.strip().splitlines() if " INFO digits.worker " not in line]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert all(text in lines[0] for text in expected), lines[0]


def run_all(commands: list[list[str]], env: dict[str, str] | None = None) -> list[subprocess.CompletedProcess[str]]:
    """Run the commands side by side (some wait for a timeout); their outcomes in order."""
    started = [subprocess.Popen([sys.executable, "-m", *command], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for command in commands]
    outcomes = []
    for process, command in zip(started, commands, strict=True):
        stdout, stderr = process.communicate(timeout=120)
        outcomes.append(subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
    return outcomes


def test_a_malformed_redis_url_is_one_line_for_every_cli() -> None:
    urls = [("localhost:6379", "malformed"), (f"redis://u:{PASSWORD}@host:port/0", "malformed"),
            ("redis://127.0.0.1:6379/zero", "must be a number")]
    env = {**os.environ, "REDIS_URL": "http://127.0.0.1:6379/0"}
    outcomes = run_all([[*cli, "--redis-url", url] for cli, (url, _) in zip(CLIS, urls, strict=True)])
    for done, (_, expected) in zip(outcomes, urls, strict=True):
        answers_one_line(done, expected)
        assert PASSWORD not in done.stderr
    answers_one_line(run_all([list(CLIS[0])], env=env)[0], "malformed")


def test_a_database_redis_does_not_have_is_one_line_for_every_cli(redis_url: str) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/99"
    for done in run_all([[*cli, "--redis-url", url] for cli in CLIS]):
        answers_one_line(done, "no such database")


def test_a_redis_that_never_answers_is_one_line_for_every_cli() -> None:
    """A socket that accepts connections and never replies (a stopped or wedged Redis): each CLI
    gives up after REDIS_TIMEOUT seconds, the health probe says unhealthy."""
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(16)
        url = f"redis://127.0.0.1:{mute.getsockname()[1]}/0"
        started = time.monotonic()
        outcomes = run_all([[*cli, "--redis-url", url] for cli in CLIS]
                           + [["worker", "--health", "live", "--redis-url", url]])
        assert time.monotonic() - started < 4 * REDIS_TIMEOUT
    for done in outcomes[:-1]:
        answers_one_line(done, "did not answer")
    health = outcomes[-1]
    assert health.returncode == 1 and health.stdout.startswith("unhealthy: Redis: ") and not health.stderr


def test_permission_errors_inside_pipelines_are_one_line(acl_redis: AclRedis, acl_connection: redis.Redis,
                                                         tmp_path: Path) -> None:
    """The registry promotes in a MULTI/EXEC transaction: a user that may not (the producer's) gets
    one line, as for plain commands (the producer's and the worker's CLIs as the trainer); redis-py 8
    raises NoPermissionError without the NOPERM the CLIs looked for. A worker process refused
    exits FATAL, and its supervisor with it, instead of respawning it forever."""
    producer, trainer = acl_redis.url_for("producer"), acl_redis.url_for("trainer")
    version = Registry(acl_connection).publish_dir(DEFAULT_MODEL_DIR)  # one that loads: only the ACL refuses it
    written = sorted(acl_connection.keys())
    (tmp_path / "a.png").write_bytes(b"x")
    outcomes = run_all([["trainer", "promote", version, "--redis-url", producer],
                        ["producer", "enqueue", str(tmp_path), "--redis-url", trainer],
                        ["worker", "--redis-url", trainer], ["worker", "--redis-url", producer]])
    for done in outcomes:
        answers_one_line(done, "Redis refused", "no permissions")
    assert outcomes[3].returncode == 3 and "Redis refused this worker's user" in outcomes[3].stderr
    assert sorted(acl_connection.keys()) == written


def test_an_output_that_cannot_be_written_is_one_line(redis_url: str, default_version: str, tmp_path: Path,
                                                      connection: redis.Redis) -> None:
    (tmp_path / "a.png").write_bytes(b"x")
    a_file = tmp_path / "a.png"
    earlier = tmp_path / "earlier.jsonl"
    earlier.write_text("an earlier run's results\n")
    outcomes = run_all([["producer", "run", str(tmp_path), "-o", "/nonexistent/x.jsonl", "--redis-url", redis_url],
                        ["producer", "run", str(tmp_path), "-o", str(tmp_path), "--redis-url", redis_url],
                        ["producer", "watch", str(tmp_path), "-o", f"{a_file}/x", "--redis-url", redis_url],
                        ["trainer", "export", default_version, f"{a_file}/model", "--redis-url", redis_url],
                        ["producer", "run", "--resume", "mistyped", "-o", str(earlier), "--redis-url", redis_url]])
    for done in outcomes:
        answers_one_line(done)
    assert "/nonexistent/x.jsonl" in outcomes[0].stderr and "No such file or directory" in outcomes[0].stderr
    assert "Is a directory" in outcomes[1].stderr and "Not a directory" in outcomes[3].stderr
    assert connection.zcard(keys.RUNS) == 0  # nothing was sent
    assert earlier.read_text() == "an earlier run's results\n"  # the output is emptied only once its run exists
