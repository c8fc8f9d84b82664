"""The README's first command: the main job on an embedded default, leaving nothing behind."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT


def processes_mentioning(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def test_demo_classifies_samples_and_stops_everything() -> None:
    done = subprocess.run([sys.executable, "-m", "producer", "demo"], cwd=ROOT, capture_output=True,
                          text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "24 images, 24 classified, 0 failed" in done.stderr
    rows = re.findall(r"(mnist|scan)-\d\d-label(\d)\.\w+\s*│\s*(\d)\s*│", done.stdout)
    assert len(rows) == 20
    assert sum(label == predicted for _, label, predicted in rows) >= 18
    # Postal crops: the code with its separator, the code's confidence, flagged under the default 0.9.
    crops = re.findall(r"postal-\d\d-code([\d_-]+)\.png\s*│\s*([\d -]+?)\s*│\s*([\d.]+)\s*│\s*(review)?\s*│",
                       done.stdout)
    assert len(crops) == 4
    assert sum(truth.replace("_", " ") == code for truth, code, _, _ in crops) >= 2
    assert all((float(confidence) < 0.9) == (flag == "review") for _, _, confidence, flag in crops)
    flagged = len(re.findall(r"│\s*review\s*│", done.stdout))
    summary = rf"run \S+: 24 images, 24 classified, 0 failed, {flagged} for review, [\d.]+ s, [\d,]+ images/s\n"
    assert re.search(summary, done.stderr), done.stderr  # one line, however narrow the (absent) terminal
    port = re.search(r"private Redis on redis://127\.0\.0\.1:(\d+)", done.stdout)
    assert port is not None
    assert processes_mentioning(f"127.0.0.1:{port.group(1)}") == []
    assert processes_mentioning(f"--port\x00{port.group(1)}") == []


def test_demo_interrupted_leaves_nothing_running(tmp_path: Path) -> None:
    sample = (ROOT / "producer" / "samples" / "mnist-00-label7.png").read_bytes()
    for index in range(20_000):  # seconds of work: the interrupt lands mid-run, however fast the machine
        (tmp_path / f"{index:05d}.png").write_bytes(sample)  # copies: a file takes at most 65,000 hard links
    demo = subprocess.Popen([sys.executable, "-m", "producer", "demo", "--directory", str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert demo.stdout is not None
    line = demo.stdout.readline()
    port = re.search(r"redis://127\.0\.0\.1:(\d+)", line)
    assert port is not None, line
    time.sleep(1.0)  # workers are starting
    demo.send_signal(signal.SIGINT)
    demo.communicate(timeout=60)
    assert demo.returncode != 0
    deadline = time.monotonic() + 10
    while processes_mentioning(f"127.0.0.1:{port.group(1)}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(f"127.0.0.1:{port.group(1)}") == []
    assert processes_mentioning(f"--port\x00{port.group(1)}") == []
