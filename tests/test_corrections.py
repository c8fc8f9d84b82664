"""`digits-producer corrections`: the keyed codes of runs as a labelled set, in the format of
docs/corrections.md."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import redis

from producer import keying
from producer.corrections import LABEL_FIELDS, UNREADABLE_FIELDS
from tests.conftest import ROOT, FlaggedRun, stored_results, stored_run


def corrections(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "producer", "corrections", *args, "--redis-url", redis_url],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_two_runs_exported_as_a_labelled_set(redis_url: str, connection: redis.Redis, flagged_run: FlaggedRun,
                                             tmp_path: Path) -> None:
    """Keyed codes of a run read by a real worker and of a second run: images copied, labelled,
    unreadable ones listed apart, a file gone since keying reported and left out."""
    first = flagged_run.run_id
    keyed = flagged_run.flagged[:5]
    for path in keyed[:3]:
        keying.submit(connection, first, "alpha", path, flagged_run.truth[path])
    keying.submit(connection, first, "alpha", keyed[3], None)
    keying.submit(connection, first, "beta", keyed[4], "11111")
    (flagged_run.folder / keyed[4]).unlink()  # gone from the folder since it was keyed
    second = stored_run(connection, tmp_path / "second", 4, flagged_every=2)
    keying.submit(connection, second.run_id, "gamma", "scan-002.png", "02139-4307")
    out = tmp_path / "export"

    done = corrections(redis_url, first, second.run_id, "-o", str(out))

    assert done.returncode == 1, done.stderr  # something was left out, and it says what
    assert f"run {first}: {keyed[4]}: no such file" in done.stderr
    assert "4 labelled images from 2 runs, 1 unreadable" in done.stderr
    labels = rows(out / "labels.csv")
    assert list(labels[0]) == list(LABEL_FIELDS)
    assert [(r["run"], r["source"], r["code"]) for r in labels] == \
        [(first, p, flagged_run.truth[p]) for p in keyed[:3]] + [(second.run_id, "scan-002.png", "02139-4307")]
    results = {run: stored_results(connection, run) for run in (first, second.run_id)}
    for row in labels:
        source = (flagged_run.folder if row["run"] == first else second.folder) / row["source"]
        assert (out / row["path"]).read_bytes() == source.read_bytes()
        assert row["path"] == f"images/{row['run']}/{row['source']}"
        assert row["digits"] == row["code"].replace("-", "")
        machine = results[row["run"]][row["source"]]
        assert (row["machine_code"], row["model_version"]) == (machine["code"], machine["model_version"])
        assert datetime.fromisoformat(row["keyed_at"]).tzinfo is not None
    assert {r["station"] for r in labels} == {"alpha", "gamma"}
    [unreadable] = rows(out / "unreadable.csv")
    assert list(unreadable) == list(UNREADABLE_FIELDS)
    assert (unreadable["run"], unreadable["source"], unreadable["station"]) == (first, keyed[3], "alpha")
    assert not (out / "images" / first / keyed[3]).exists()  # unreadable images teach nothing: not copied

    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["format"], manifest["format_version"]) == ("digits-corrections", 1)
    assert manifest["counts"] == {"labelled": 4, "unreadable": 1, "missing": 1}
    assert [(r["run"], r["flagged"], r["labelled"], r["unreadable"]) for r in manifest["runs"]] == \
        [(first, len(flagged_run.flagged), 3, 1), (second.run_id, 2, 1, 0)]
    assert manifest["runs"][0]["missing"] == [{"source": keyed[4], "problem": f"{keyed[4]}: no such file in "
                                                                               f"{flagged_run.folder}"}]
    assert sorted(p.name for p in out.iterdir()) == ["images", "labels.csv", "manifest.json", "unreadable.csv"]

    again = corrections(redis_url, second.run_id, "-o", str(tmp_path / "second-only"))
    assert again.returncode == 0, again.stderr


def test_an_export_refuses_what_it_cannot_do_and_writes_nothing(redis_url: str, connection: redis.Redis,
                                                                tmp_path: Path) -> None:
    run = stored_run(connection, tmp_path / "run", 1)
    keying.submit(connection, run.run_id, "alpha", "scan-000.png", "12345")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "labels.csv").write_text("an earlier export\n")
    refused = corrections(redis_url, run.run_id, "-o", str(busy))
    assert refused.returncode == 1 and "is not an empty folder" in refused.stderr
    assert [p.name for p in busy.iterdir()] == ["labels.csv"]

    for args, message in (([run.run_id, "no-such-run"], "no such run: no-such-run"), (["../x"], "not a run id")):
        out = tmp_path / "new"
        failed = corrections(redis_url, *args, "-o", str(out))
        assert failed.returncode == 1 and message in failed.stderr, failed.stderr
        assert not out.exists()
