"""What gets the one-hidden-layer MLP to 99.3%: each ingredient of the `best` preset, measured.

Every variant is trained for the same number of epochs with the same seed, then evaluated on
the 10k test set (never used for training or selection) and under the perturbations of
trainer/perturb.py. Prints two tables and the machine they ran on.

    .venv/bin/python -m benchmarks.ablation --epochs 40
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.pipeline import machine
from digits.network import Recogniser
from trainer import mnist
from trainer.perturb import robustness
from trainer.train import PRESETS, Preset, epochs_of, train

BEST = PRESETS["best"]
PLAIN = replace(BEST, distort=False, schedule="constant", standardize=False, ema=False, select="last")
# (label, recipe): cumulative from plain Adam to the `best` preset, then one change at a time from it.
VARIANTS: list[tuple[str, Preset]] = [
    ("plain: H=1024, Adam 1e-3, Glorot", PLAIN),
    ("+ cosine schedule, best-validation epoch", replace(PLAIN, schedule="cosine", select="best")),
    ("+ inputs standardised (folded into theta1)", replace(PLAIN, schedule="cosine", select="best",
                                                          standardize=True)),
    ("+ weight averaging (EMA 0.999)", replace(BEST, distort=False)),
    ("+ elastic and affine distortions = best", BEST),
    ("best, N(0, 1) init as in the seed", replace(BEST, init="normal")),
    ("best, label smoothing 0.1", replace(BEST, label_smoothing=0.1)),
    ("best, dropout 0.2 on the hidden layer", replace(BEST, dropout=0.2)),
    ("best, constant rate, last epoch (no schedule, no selection)", replace(BEST, schedule="constant",
                                                                           select="last")),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=40, help="epochs per variant (the preset runs 250)")
    parser.add_argument("--only", type=int, nargs="*", help="indexes of the variants to run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    data = mnist.load()
    steps = args.epochs * epochs_of(BEST, 55_000)[1]
    rows: list[dict[str, Any]] = []
    models: dict[str, Recogniser] = {}
    chosen = [VARIANTS[i] for i in args.only] if args.only else VARIANTS
    for label, recipe in chosen:
        started = time.monotonic()
        trained = train(data, replace(recipe, steps=steps, name="ablation"), report=lambda _line: None)
        rows.append({"variant": label, "validation": trained.validation_accuracy, "test": trained.test_accuracy,
                     "best_epoch": trained.best_epoch, "seconds": time.monotonic() - started})
        models[label] = trained.model
        print(f"{label:<46} validation {trained.validation_accuracy:.4f}  test {trained.test_accuracy:.4f}  "
              f"{rows[-1]['seconds']:.0f} s", flush=True)
    table = robustness(models, data.test_images, data.test_labels)

    print(f"\nAblation, {args.epochs} epochs each, seed {BEST.seed}; {machine()}\n")
    print("| variant | validation | test | error | best epoch | time |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['variant']} | {row['validation']:.2%} | {row['test']:.2%} | {1 - row['test']:.2%} | "
              f"{row['best_epoch']} | {row['seconds'] / 60:.1f} min |")
    print("\nTest accuracy under perturbations\n")
    print("| perturbation | " + " | ".join(models) + " |")
    print("|---|" + "---:|" * len(models))
    for name, accuracies in table.items():
        print(f"| {name} | " + " | ".join(f"{accuracies[m]:.2%}" for m in models) + " |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "robustness": table, "machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
