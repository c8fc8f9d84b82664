"""deploy/users.acl, the ACL file docs/security.md recommends, against a real redis-server: the
whole pipeline runs under its users with nothing refused, and a restart from AOF loses nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from digits import keys
from digits.connection import connect, text
from digits.registry import DEFAULT_MODEL_DIR, Registry
from digits.results import results_count
from producer import runs
from producer.sending import enqueue_folder
from tests.conftest import ACL_FILE, ROOT, AclRedis, MakeFolder, WorkerPool


def cli(component: str, url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", component, *args, "--redis-url", url], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}: {done.stderr}"
    return done.stdout


def side_by_side(*commands: tuple[str, str, list[str]]) -> list[str]:
    """Run CLIs (component, URL, arguments) at the same time; each must succeed; their outputs."""
    started = [subprocess.Popen([sys.executable, "-m", component, *args, "--redis-url", url], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for component, url, args in commands]
    outputs = []
    for process in started:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, f"{process.args!r}: {stderr}"
        outputs.append(stdout)
    return outputs


def snapshot(connection: redis.Redis) -> dict[str, Any]:
    """Every key with its type and whole content."""
    readers: dict[str, Callable[[bytes], Any]] = {
        "string": connection.get, "hash": connection.hgetall, "set": connection.smembers,
        "list": lambda key: connection.lrange(key, 0, -1),
        "zset": lambda key: connection.zrange(key, 0, -1, withscores=True),
        "stream": lambda key: connection.xrange(key)}
    found = {}
    for key in connection.scan_iter(count=1000):
        kind = text(connection.type(key))
        found[text(key)] = (kind, readers[kind](key))
    return found


def test_the_shipped_file_keeps_the_default_user_able_to_replay_the_aof() -> None:
    """Redis replays the AOF as the default user, and before redis#14545 (valkey#3983) it checks that
    user's permissions at each EXEC: `user default off` alone dropped every transaction on restart."""
    default = ACL_FILE.read_text().splitlines()[0].split()
    assert default[:3] == ["user", "default", "off"]
    assert {"resetpass", "~*", "&*", "+@all"} <= set(default[3:]) and "nopass" not in default


def test_shipped_acl_file_keeps_every_write_across_an_aof_restart(tmp_path: Path, digit_folder: MakeFolder) -> None:
    """The registry (MULTI/EXEC), runs and RQ's jobs (MULTI/EXEC pipelines) and results (a WATCH
    transaction) written by the trainer, producer and worker users all come
    back when Redis restarts from its AOF with deploy/users.acl."""
    folder, truth = digit_folder(10)
    (tmp_path / "redis").mkdir()
    server = AclRedis(tmp_path / "redis").start()
    try:
        version = Registry(connect(server.url_for("trainer"))).publish_dir(DEFAULT_MODEL_DIR, promote=True)
        producer, settings = connect(server.url_for("producer")), runs.Settings(batch_size=4)
        done_run = runs.create_run(producer, folder, settings)
        enqueue_folder(producer, done_run, folder, settings)
        ok(cli("worker", server.url_for("worker"), "--burst"))
        queued_run = runs.create_run(producer, folder, settings)
        enqueue_folder(producer, queued_run, folder, settings)
        producer.close()
        admin = redis.Redis.from_url(server.url)
        before = snapshot(admin)
        assert text(admin.get(keys.MODEL_CURRENT)) == version
        assert results_count(admin, done_run) == len(truth)
        assert admin.llen("rq:queue:digits") == 3 and admin.exists(keys.batch(queued_run, 0))
        admin.close()
        aof = b"".join(path.read_bytes() for path in (tmp_path / "redis" / "appendonlydir").glob("*.aof"))
        assert aof.count(b"MULTI") >= 10 and b"EXEC" in aof  # the writes at risk were made

        server.stop()
        server.start()
        admin = redis.Redis.from_url(server.url)
        after = snapshot(admin)
        admin.close()
    finally:
        server.close()
    assert set(after) == set(before)
    assert after == before
    assert "NOPERM" not in (tmp_path / "redis" / "redis.log").read_text()


def test_the_whole_pipeline_runs_under_the_documented_acl_users(acl_redis: AclRedis, acl_connection: redis.Redis,
                                                                digit_folder: MakeFolder, tmp_path: Path) -> None:
    """The trainer, producer and worker users of deploy/users.acl: import --promote; workers, their
    sweeps (every 5 s while it runs) and health probes; run (one image a batch), enqueue --wait,
    --resume, results --follow and status. ACL LOG records no refusal, and does record the ones
    the split exists for."""
    trainer, producer, worker = (acl_redis.url_for(role) for role in ("trainer", "producer", "worker"))
    folder, truth = digit_folder(24)
    pool = WorkerPool(worker, 1)
    try:
        ok(cli("trainer", trainer, "import", str(DEFAULT_MODEL_DIR), "--promote"))
        pool.wait_registered(acl_connection, 1)
        out = tmp_path / "run.jsonl"
        side_by_side(("producer", producer, ["run", str(folder), "--batch-size", "1", "-o", str(out)]),
                     ("producer", producer, ["enqueue", str(folder), "--batch-size", "5", "--wait"]))
        assert {json.loads(line)["path"] for line in out.read_text().splitlines()} == set(truth)
        run_id = ok(cli("producer", producer, "enqueue", str(folder), "--batch-size", "5")).strip()
        resumed, followed = side_by_side(("producer", producer, ["run", "--resume", run_id, "--batch-size", "5"]),
                                         ("producer", producer, ["results", run_id, "--follow"]))
        assert len(resumed.splitlines()) == len(followed.splitlines()) == len(truth)
        status, live, ready = side_by_side(("producer", producer, ["status", run_id, "--json"]),
                                           ("worker", worker, ["--health", "live"]),
                                           ("worker", worker, ["--health", "ready"]))
        report = json.loads(status)
        assert report["run"]["complete"] and report["run"]["done"] == len(truth) and len(report["workers"]) == 1
        assert live.startswith("live: 1 worker(s)") and ready.startswith("ready: 1 of 1 worker(s)")
    finally:
        assert pool.stop() == 0
    assert acl_redis.refusals() == []

    with pytest.raises(redis.exceptions.NoPermissionError):
        redis.Redis.from_url(producer).set(keys.MODEL_CURRENT, "mine")
    with pytest.raises(redis.exceptions.NoPermissionError):
        redis.Redis.from_url(trainer).lpush("rq:queue:digits", "job")
    assert {entry["object"] for entry in acl_redis.refusals()} == {keys.MODEL_CURRENT, "rq:queue:digits"}
