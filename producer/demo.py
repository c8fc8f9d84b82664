"""The main job on an embedded default: private Redis, two workers, the bundled model and samples.

Everything it starts is stopped on the way out, also on Ctrl-C, SIGTERM or failure.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.table import Table

from digits.connection import connect
from digits.registry import DEFAULT_MODEL_DIR, Registry
from digits.results import decode_result
from producer import runs
from producer.drive import drive, print_summary
from producer.redis_server import RedisServer

SAMPLES = Path(__file__).resolve().parent / "samples"


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_demo(workers: int, directory: Path | None) -> int:
    # Both stop the demo cleanly. SIGINT too, explicitly: a program started in the background by a
    # shell inherits SIGINT ignored, and would then run to the end whatever it was sent.
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGINT, raise_interrupt)
    console = Console()
    with RedisServer() as server:
        console.print(f"private Redis on {server.url}")
        connection = connect(server.url)
        registry = Registry(connection)
        if registry.current() is None:
            version = registry.publish_dir(DEFAULT_MODEL_DIR, promote=True)
            console.print(f"published the bundled default model as {version}")
        pool = subprocess.Popen(
            [sys.executable, "-m", "worker", "--count", str(workers), "--redis-url", server.url,
             "--log-level", "WARNING"],
            start_new_session=True,
        )
        try:
            stream = io.StringIO()
            folder, settings = directory or SAMPLES, runs.Settings(batch_size=8)
            run_id = runs.create_run(connection, folder, settings)
            outcome = drive(connection, run_id, folder, settings, stream, "jsonl",
                                            show_progress=False)
        finally:
            stop_process_group(pool)
    table = Table("image", "code", "confidence", "review", "error", title=f"run {run_id}")
    for line in sorted(stream.getvalue().splitlines()):
        record = decode_result(line)
        confidence = "" if record["confidence"] is None else f"{record['confidence']:.3f}"
        table.add_row(record["path"], record["code"] or "", confidence, "review" if record["review"] else "",
                      record["error"] or "")
    console.print(table)
    print_summary(run_id, outcome)
    return 1 if outcome.failed else 0
