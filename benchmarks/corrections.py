"""What keyed corrections buy: the keying loop run end to end, with the generator's true codes
standing in for an operator.

1. A generated set of 5-digit crops (MNIST test digits 0-4,999) is read by real workers through
   `digits-producer run`; every flagged code is keyed with its true code, through the keying
   storage the station uses, and exported with `digits-producer corrections`.
2. Two models are trained with the same budget: the `best` recipe as it is, and the same with
   `--corrections` on that export.
3. A fresh set (MNIST test digits 5,000-9,999, never keyed) is read by the bundled default model
   and by both: whole codes right, and the share flagged for review.

Run: .venv/bin/python -m benchmarks.corrections [--keyed 600] [--fresh 500] [--steps 4000] [--crops 2000]
The default budget is a small fraction of the `best` preset's (128,700 steps, 40,000 crops), so
the retrained models read worse than the default one; compare them with each other.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.pipeline import ROOT, Workers, machine
from benchmarks.postal import Scored, read_all, score
from digits import keys
from digits.connection import connect, text
from digits.network import Recogniser, load_model_dir
from digits.registry import DEFAULT_MODEL_DIR, Registry
from producer import keying
from producer.corrections import export
from producer.redis_server import RedisServer
from trainer import mnist
from trainer.synth import generate, png_bytes


def key_flagged(folder: Path, truth: dict[str, str], out: Path) -> tuple[int, int]:
    """Read the folder with real workers, key its flagged codes from the truth, export them;
    return (crops, flagged)."""
    with RedisServer() as server:
        Registry(connect(server.url)).publish_dir(DEFAULT_MODEL_DIR, promote=True)
        with Workers(server.url, 2):
            done = subprocess.run([sys.executable, "-m", "producer", "run", str(folder), "--redis-url", server.url,
                                   "-o", "/dev/null", "--no-progress"], cwd=ROOT, capture_output=True, text=True,
                                  check=False)
        if done.returncode not in (0, 1):
            raise RuntimeError(f"digits-producer run failed: {done.stderr[-2000:]}")
        connection = connect(server.url)
        run_id = done.stderr.split()[1]
        flagged = sorted(text(path) for path in connection.smembers(keys.run_review(run_id)))
        for path in flagged:
            keying.submit(connection, run_id, "benchmark", path, truth[path])
        export(connection, [run_id], out)
    return len(truth), len(flagged)


def train(out: Path, steps: int, crops: int, corrections: Path | None) -> Recogniser:
    """The `best` recipe on this budget (and the corrections), written to out, not published."""
    extra = ["--corrections", str(corrections)] if corrections else []
    subprocess.run([sys.executable, "-m", "trainer", "train", "--preset", "best", "--steps", str(steps),
                    "--crops", str(crops), "--no-publish", "--out", str(out), *extra], cwd=ROOT, check=True)
    return load_model_dir(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keyed", type=int, default=600, help="crops in the set read and keyed")
    parser.add_argument("--fresh", type=int, default=500, help="crops in the fresh set read afterwards")
    parser.add_argument("--steps", type=int, default=4000, help="training steps of each retrained model")
    parser.add_argument("--crops", type=int, default=2000, help="generated crops cut for each retrained model")
    args = parser.parse_args()
    started = time.monotonic()
    data = mnist.load()
    images, labels = data.test_images, data.test_labels
    keyed_crops = generate(args.keyed, images[:5000], labels[:5000], formats=("5",), seed=41)
    fresh = generate(args.fresh, images[5000:], labels[5000:], formats=("5",), seed=42)
    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp) / "keyed", Path(tmp) / "corrections"
        folder.mkdir()
        truth = {}
        for index, crop in enumerate(keyed_crops):
            (folder / f"crop-{index:04d}.png").write_bytes(png_bytes(crop))
            truth[f"crop-{index:04d}.png"] = crop.code
        read, flagged = key_flagged(folder, truth, out)
        models = {"default model (bundled)": load_model_dir(DEFAULT_MODEL_DIR),
                  "retrained, same budget": train(Path(tmp) / "base", args.steps, args.crops, None),
                  "retrained + corrections": train(Path(tmp) / "keyed-model", args.steps, args.crops, out)}
    rows: list[Scored] = [score(name, fresh, *read_all(fresh, model, None, None)) for name, model in models.items()]
    print(f"machine: {machine()}")
    print(f"command: python -m benchmarks.corrections {' '.join(sys.argv[1:])}")
    print(f"keyed: {flagged} of {read} crops flagged and keyed; fresh set: {len(fresh)} crops; "
          f"retrained: --steps {args.steps} --crops {args.crops}; {time.monotonic() - started:.0f} s in all\n")
    print("| model | whole codes right | flagged for review | error among the unflagged |")
    print("| --- | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row.name} | {row.whole:.1%} | {row.reviewed:.1%} | {row.review_error:.2%} |")


if __name__ == "__main__":
    main()
