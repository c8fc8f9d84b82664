"""The throughput suite (issue 5): every figure side by side, in one run, with the machine it ran on.

Run: .venv/bin/python -m benchmarks.suite [--plot docs/benchmarks-throughput.png]
     .venv/bin/python -m benchmarks.suite --quick      # a smoke run with a few hundred images

On MNIST test digits (28 x 28 PNG) and on generated postal crops (5 digits, about 270 x 85 PNG):
(a) the in-process limit on 1 and 2 cores; (b) `digits-producer run` end to end through a
private Redis with 1 and 2 workers (and a batch-size sweep for the plot); (c) the naive
baseline, one RQ job per image on RQ's default fork-per-job `rq worker` (on a subset);
(d) a Keras `model.predict` script; (e) a plain Pillow decode of the same files in 2
processes, the least any reader of them spends (the decode floor). Then the latency of one
image, worker RSS, and producer and Redis memory over a flat folder of many files (hard
links). Prints Markdown tables and the targets of the issue, met or not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.inputs import link_folder, write_crops, write_digits
from benchmarks.latency import one_image_latencies, percentiles
from benchmarks.memory import MemoryRun, producer_memory
from benchmarks.naive import naive
from benchmarks.pipeline import BATCH, ROOT, Timed, Workers, decode_floor, end_to_end, in_process, machine
from digits.connection import connect
from digits.defaults import WINDOW
from digits.registry import DEFAULT_MODEL_DIR, Registry
from producer.redis_server import RedisServer

INPUTS = ("mnist", "crops")
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
STARTED = time.monotonic()


def say(message: str) -> None:
    """Progress on stderr, so stdout holds only the tables."""
    print(f"[{time.monotonic() - STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


@dataclass
class Report:
    """Every measured figure of one run (rates in images/s, memory in MiB, latency in seconds)."""

    machine: str
    command: str
    counts: dict[str, int]
    crop_size: tuple[float, float]
    naive_counts: dict[str, int]
    naive_workers: int
    in_process: dict[str, dict[int, float]] = field(default_factory=dict)  # input -> cores -> rate
    decode: dict[str, float] = field(default_factory=dict)  # input -> plain decode rate, 2 processes
    file_bytes: dict[str, float] = field(default_factory=dict)  # input -> mean file size
    end_to_end: dict[str, dict[int, Timed]] = field(default_factory=dict)  # input -> workers -> run
    sweep: dict[int, dict[int, float]] = field(default_factory=dict)  # workers -> batch size -> rate (MNIST)
    naive: dict[str, float] = field(default_factory=dict)
    keras: dict[str, dict[str, Any]] = field(default_factory=dict)
    latency: tuple[float, float] = (0.0, 0.0)
    worker_rss: tuple[float, float, float] = (0.0, 0.0, 0.0)  # largest worker: now, peak working, peak loading
    memory: list[MemoryRun] = field(default_factory=list)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000, help="MNIST test digits")
    parser.add_argument("--crops", type=int, default=2_000, help="generated postal crops")
    parser.add_argument("--naive-images", type=int, default=1_000, help="MNIST subset for the naive baseline")
    parser.add_argument("--naive-crops", type=int, default=200, help="crop subset for the naive baseline")
    parser.add_argument("--naive-workers", type=int, default=2)
    parser.add_argument("--batch-sizes", default="16,64,256,1024", help="sweep for the plot (MNIST)")
    parser.add_argument("--latency-samples", type=int, default=500)
    parser.add_argument("--memory-files", type=int, default=200_000, help="files of the big flat folder")
    parser.add_argument("--no-keras", action="store_true", help="skip (d), e.g. where TensorFlow is missing")
    parser.add_argument("--plot", type=Path, default=None, help="write the batch-size plot here (PNG)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    parser.add_argument("--render", type=Path, default=None, help="measure nothing: print the tables of a --json file")
    parser.add_argument("--quick", action="store_true", help="smoke run: a few hundred images, small folders")
    args = parser.parse_args()
    if args.quick:
        args.images, args.crops, args.naive_images, args.naive_crops = 300, 30, 60, 10
        args.batch_sizes, args.latency_samples, args.memory_files = "64,256", 50, 12_000
    return args


def keras_rate(folder: Path) -> dict[str, Any]:
    """(d) in its own process, with TensorFlow's default threads (the workers' one-BLAS-thread setting removed)."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    done = subprocess.run([sys.executable, "-m", "benchmarks.keras_script", str(folder)], cwd=ROOT, env=env,
                          capture_output=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    result["rate"] = result["images"] / result["seconds"]
    return result


def measure(args: argparse.Namespace, scratch: Path) -> Report:
    """Every figure, one after the other (nothing else running): each Redis and worker pool serves
    all the measurements made with it."""
    say("writing inputs")
    files = {"mnist": write_digits(scratch / "mnist", args.images)}
    files["crops"], crop_size = write_crops(scratch / "crops", args.crops)
    report = Report(machine(), " ".join(["python -m benchmarks.suite", *sys.argv[1:]]),
                    {name: len(paths) for name, paths in files.items()}, crop_size,
                    {"mnist": min(args.naive_images, args.images), "crops": min(args.naive_crops, args.crops)},
                    args.naive_workers)

    report.file_bytes = {name: sum(p.stat().st_size for p in paths) / len(paths) for name, paths in files.items()}
    for name in INPUTS:
        report.in_process[name] = {}
        for cores in (1, 2):
            say(f"(a) in-process, {name}, {cores} core(s)")
            report.in_process[name][cores] = in_process(files[name], cores)
        say(f"(e) plain Pillow decode, {name}, 2 processes")
        report.decode[name] = decode_floor(files[name], 2)

    warm = link_folder([*files["mnist"][:64], *files["crops"][:8]], scratch / "warm", 72)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    for workers in (1, 2):
        with RedisServer() as server:
            Registry(connect(server.url)).publish_dir(DEFAULT_MODEL_DIR, promote=True)
            with Workers(server.url, workers) as pool:
                end_to_end(server.url, warm, len(list(warm.iterdir())))  # the first jobs' one-time costs are not timed
                parts = {**pool.parts(), "redis": [server.process.pid] if server.process else []}
                for name in INPUTS:
                    say(f"(b) digits-producer run, {name}, {workers} worker(s)")
                    report.end_to_end.setdefault(name, {})[workers] = end_to_end(
                        server.url, scratch / name, len(files[name]), parts=parts)
                report.sweep[workers] = {BATCH: report.end_to_end["mnist"][workers].rate}
                for size in sizes:
                    if size != BATCH:
                        say(f"(b) sweep, {workers} worker(s), batch size {size}")
                        report.sweep[workers][size] = end_to_end(server.url, scratch / "mnist", args.images,
                                                                 size).rate
                if workers == 2:
                    say("latency of one image")
                    report.latency = percentiles(one_image_latencies(server.url, files["mnist"][0],
                                                                     args.latency_samples))
                    report.worker_rss = (max(pool.rss_mib("VmRSS")), max(pool.rss_mib("VmHWM")), pool.load_peak)

    for name in INPUTS:
        say(f"(c) naive, {name}, {report.naive_counts[name]} images")
        report.naive[name] = naive(files[name][:report.naive_counts[name]], args.naive_workers)
    if not args.no_keras:
        for name in INPUTS:
            say(f"(d) Keras, {name}")
            report.keras[name] = keras_rate(scratch / name)

    say(f"memory: a flat folder of {args.memory_files} files (hard links)")
    big = link_folder(files["mnist"], scratch / "big", args.memory_files)
    for folder, count in ((scratch / "mnist", args.images), (big, args.memory_files)):
        say(f"memory: digits-producer run over {count} files")
        report.memory.append(producer_memory(folder, count))
    say("done")
    return report


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def render(report: Report) -> str:
    """The Markdown tables of docs/benchmarks.md."""
    ip, e2e, naive_rate, keras = report.in_process, report.end_to_end, report.naive, report.keras
    width, height = report.crop_size
    lines = [
        f"machine: {report.machine}",
        f"command: {report.command}",
        f"inputs: {report.counts['mnist']:,} MNIST test digits as 28 x 28 PNG files; {report.counts['crops']:,} "
        f"generated 5-digit postal crops as PNG files (mean {width:.0f} x {height:.0f})",
        "",
        row(["throughput", "MNIST images/s", "crops images/s"]),
        row(["---", "---:", "---:"]),
    ]
    rates: list[tuple[str, dict[str, float]]] = [
        ("(a) in-process, 1 core", {n: ip[n][1] for n in INPUTS}),
        ("(a) in-process, 2 cores", {n: ip[n][2] for n in INPUTS}),
        ("(b) digits-producer run, 1 worker", {n: e2e[n][1].rate for n in INPUTS}),
        ("(b) digits-producer run, 2 workers", {n: e2e[n][2].rate for n in INPUTS}),
        (f"(c) naive: one RQ job per image, {report.naive_workers} `rq worker` "
         f"({report.naive_counts['mnist']:,} / {report.naive_counts['crops']:,} images)", naive_rate),
    ]
    if keras:
        rates.append(("(d) Keras `model.predict` script", {n: keras[n]["rate"] for n in INPUTS}))
    if report.decode:
        rates.append(("(e) plain Pillow decode, 2 processes (the decode floor)", report.decode))
    lines += [row([label, *(f"{values[n]:,.0f}" if values[n] >= 10 else f"{values[n]:.1f}" for n in INPUTS)])
              for label, values in rates]
    startup = [t.wall - t.inside for n in INPUTS for t in e2e[n].values()]
    lines += ["", "The (b) rows are the wall time of the whole command; its start-up (import, connect) took "
              f"{min(startup):.2f}-{max(startup):.2f} s. Timed by the command itself: "
              + ", ".join(f"{n} {w} worker{'s' if w > 1 else ''} {e2e[n][w].inside_rate:,.0f}/s"
                          for n in INPUTS for w in (1, 2)) + "."]
    lines.append("CPU seconds per 1,000 images, end to end with 2 workers (MNIST / crops): " + ", ".join(
        f"{part} {e2e['mnist'][2].cpu[part] * 1000 / report.counts['mnist']:.2f} / "
        f"{e2e['crops'][2].cpu[part] * 1000 / report.counts['crops']:.1f}"
        for part in ("workers", "producer", "redis", "supervisor"))
        + "; in-process, 1 core: " + " / ".join(f"{1000 / ip[n][1]:.2f}" for n in INPUTS) + ".")
    if keras:
        lines.append("(d) excludes TensorFlow's import and the model's build "
                     f"({keras['mnist']['startup_seconds']:.1f} s); predict alone took "
                     f"{keras['mnist']['predict_seconds']:.2f} s (MNIST) and {keras['crops']['predict_seconds']:.2f} s "
                     f"(crops, {keras['crops']['digits']:,} digits).")
    lines += ["", row(["batch size (MNIST, images/s)", *(str(s) for s in sorted(report.sweep[1]))]),
              row(["---", *("---:" for _ in report.sweep[1])])]
    for workers, sweep in sorted(report.sweep.items()):
        lines.append(row([f"{workers} worker{'s' if workers > 1 else ''}",
                          *(f"{sweep[s]:,.0f}" for s in sorted(sweep))]))
    small, big = report.memory[0], report.memory[-1]
    p50, p99 = report.latency
    lines += ["", row(["latency and memory", "measured"]), row(["---", "---:"]),
              row(["one image, enqueue to result, p50 / p99 (2 warm workers)",
                   f"{p50 * 1000:.1f} / {p99 * 1000:.1f} ms"]),
              row(["worker RSS after all (b) runs: now / peak while working / peak while loading the model",
                   " / ".join(f"{v:.0f}" for v in report.worker_rss) + " MiB"])]
    for run in report.memory:
        lines.append(row([f"`digits-producer run`, {run.files:,} files ({run.seconds:.0f} s): producer peak RSS",
                          f"{run.producer_peak:.0f} MiB"]))
    lines += [
        row([f"producer RSS at the 10,000th result of {big.files:,}", f"{big.producer_at_10k:.0f} MiB"]),
        row(["Redis used_memory, sampled peak above the idle baseline, "
             f"{small.files:,} / {big.files:,} files", f"{small.redis_peak:.1f} / {big.redis_peak:.1f} MiB"]),
        row(["... of which results kept by design (hash; the stream names paths) at the end",
             f"{small.results:.1f} / {big.results:.1f} MiB"]),
        row(["image payloads in Redis, sampled peak (bounded by the window)",
             f"{small.payload_peak:.1f} / {big.payload_peak:.1f} MiB"]),
    ]
    lines += ["", row(["target", "measured (MNIST / crops)", "met"]), row(["---", "---", "---"])]
    lines += [row(cells) for cells in targets(report)]
    return "\n".join(lines)


def targets(report: Report) -> list[list[str]]:
    """The issue's targets, each with the ratios it was judged on (MNIST / crops)."""
    ip, e2e = report.in_process, report.end_to_end

    def judged(label: str, values: dict[str, float], goal: float, fmt: str) -> list[str]:
        shown = " / ".join(fmt.format(values[n]) for n in INPUTS if n in values)
        return [label, shown, " / ".join("yes" if values[n] >= goal else "no" for n in INPUTS if n in values)]

    two = {n: e2e[n][2].rate for n in INPUTS}
    wall = {n: two[n] / ip[n][2] for n in INPUTS}
    inside = {n: e2e[n][2].inside_rate / ip[n][2] for n in INPUTS}  # like (a): without the process's start-up
    rows = [
        ["end to end, 2 workers >= 70% of in-process 2 cores",
         "wall " + " / ".join(f"{wall[n]:.0%}" for n in INPUTS) + "; without the command's start-up (as (a) is "
         "measured) " + " / ".join(f"{inside[n]:.0%}" for n in INPUTS),
         " / ".join("yes" if wall[n] >= 0.7 else "without start-up" if inside[n] >= 0.7 else "no" for n in INPUTS)],
        ceiling(judged("end to end >= 50x naive", {n: two[n] / report.naive[n] for n in INPUTS}, 50, "{:.0f}x"),
                {n: ip[n][2] / report.naive[n] for n in INPUTS}, "{:.0f}x"),
    ]
    if report.keras:
        keras = {n: report.keras[n]["rate"] for n in INPUTS}
        wall_x = {n: two[n] / keras[n] for n in INPUTS}
        inside_x = {n: e2e[n][2].inside_rate / keras[n] for n in INPUTS}
        rows.append(ceiling(
            ["end to end >= 2x Keras",
             "wall " + " / ".join(f"{wall_x[n]:.2f}x" for n in INPUTS) + "; without the command's start-up (as (d) "
             "is measured) " + " / ".join(f"{inside_x[n]:.2f}x" for n in INPUTS),
             " / ".join("yes" if wall_x[n] >= 2 else "without start-up" if inside_x[n] >= 2 else "no"
                        for n in INPUTS)],
            {n: ip[n][2] / keras[n] for n in INPUTS}, "{:.2f}x"))
    rows.append(judged("second worker adds >= 1.5x", {n: two[n] / e2e[n][1].rate for n in INPUTS}, 1.5, "{:.2f}x"))
    if report.decode:
        of_decode = {n: two[n] / report.decode[n] for n in INPUTS}
        inside_decode = {n: e2e[n][2].inside_rate / report.decode[n] for n in INPUTS}
        rows.append(ceiling(
            ["end to end, 2 workers >= 0.30 of the decode floor (e)",
             "wall " + " / ".join(f"{of_decode[n]:.2f}" for n in INPUTS) + "; without the command's start-up "
             + " / ".join(f"{inside_decode[n]:.2f}" for n in INPUTS),
             " / ".join("yes" if of_decode[n] >= 0.3 else "without start-up" if inside_decode[n] >= 0.3 else "no"
                        for n in INPUTS)],
            {n: ip[n][2] / report.decode[n] for n in INPUTS}, "{:.2f}"))
    p50 = report.latency[0] * 1000
    small, big = report.memory[0], report.memory[-1]
    growth = big.producer_peak - small.producer_peak
    redis_growth = big.redis_peak - small.redis_peak
    results_growth = big.results - small.results
    # the window's images at the mean file size, with their paths' and sizes' JSON (under 64 B an image),
    # and a quarter more for the allocator: Redis' jemalloc rounds a 280 KB value up to its next size class
    window_mib = 1.25 * WINDOW * (report.file_bytes.get("mnist", 0.0) + 64) / 2**20
    bound = window_mib or 1.5 * small.payload_peak + 1  # a report from before file sizes were kept
    payloads_bounded = big.payload_peak <= bound
    rest_growth = (big.redis_peak - big.results) - (small.redis_peak - small.results)
    rows += [
        ["one-image latency p50 <= 5 ms", f"{p50:.1f} ms", "yes" if p50 <= 5 else "no"],
        ["worker RSS <= 150 MB", f"{report.worker_rss[1] * 1.048576:.0f} MB peak while working, "
         f"{report.worker_rss[2] * 1.048576:.0f} MB while loading the model",
         "yes" if max(report.worker_rss) * 1.048576 <= 150 else
         "working yes, loading no" if report.worker_rss[1] * 1.048576 <= 150 else "no"],
        [f"producer memory flat (within 50 MB) from {small.files:,} to {big.files:,} files",
         f"+{growth * 1.048576:.0f} MB", "yes" if growth * 1.048576 <= 50 else "no"],
        ["Redis peak bounded by the window", f"peak used_memory +{redis_growth:.0f} MiB: results "
         f"+{results_growth:.0f} MiB, the rest +{rest_growth:.0f} MiB; image payloads peak "
         f"{small.payload_peak:.1f} -> {big.payload_peak:.1f} MiB"
         + (f" (the window, {WINDOW:,} images: {window_mib:.1f} MiB)" if window_mib else ""),
         ("payloads yes" if payloads_bounded else "payloads no")
         + ("; results grow with the images (kept for the result TTL)" if results_growth > 5 else "")],
    ]
    return rows


def ceiling(cells: list[str], limit: dict[str, float], fmt: str) -> list[str]:
    """A target row, with the ratio the in-process 2-core limit itself reaches: what any pipeline
    on this machine could reach at most."""
    label, shown, met = cells
    return [label, f"{shown} (the in-process 2-core limit: " + " / ".join(fmt.format(limit[n]) for n in INPUTS)
            + ")", met]


def load_report(path: Path) -> Report:
    """A Report saved with --json, so its tables and plot can be made again without measuring."""
    raw = json.loads(path.read_text())

    def by_int(table: dict[str, Any]) -> dict[int, Any]:
        return {int(k): v for k, v in table.items()}

    raw["in_process"] = {n: by_int(t) for n, t in raw["in_process"].items()}
    raw["end_to_end"] = {n: {int(w): Timed(**t) for w, t in runs.items()} for n, runs in raw["end_to_end"].items()}
    raw["sweep"] = {int(w): by_int(t) for w, t in raw["sweep"].items()}
    raw["memory"] = [MemoryRun(**m) for m in raw["memory"]]
    raw["crop_size"], raw["latency"], raw["worker_rss"] = (tuple(raw[k]) for k in ("crop_size", "latency",
                                                                                    "worker_rss"))
    return Report(**raw)


def main() -> None:
    args = parse_args()
    if args.render is not None:
        report = load_report(args.render)
    else:
        with tempfile.TemporaryDirectory(prefix="digits-bench-") as tmp:
            report = measure(args, Path(tmp))
    table = render(report)
    print(table)
    if args.json is not None and args.render is None:
        args.json.write_text(json.dumps(asdict(report), indent=2, default=str))
    if args.plot is not None:
        from benchmarks.plot import plot_sweep

        plot_sweep(report.sweep, report.in_process["mnist"],
                   f"{report.machine}\n{report.counts['mnist']:,} MNIST digits, end to end vs in-process",
                   args.plot)


if __name__ == "__main__":
    main()
