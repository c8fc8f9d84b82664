"""`digits-trainer strips`: train a strip reader and publish it beside a version's digit model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from digits.connection import connect
from digits.manifest import model_files
from digits.registry import PLOT_FILES, Registry, build_manifest, write_dir
from trainer.options import version_options

if TYPE_CHECKING:
    from trainer.strips import StripRecipe


@click.command()
@click.option("--base", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The version directory whose digit model the new version keeps [default: the bundled model].")
@click.option("--crops", type=click.IntRange(min=1), default=None,
              help="Generated crops of MNIST training digits to train on [default: 100,000].")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="[default: 6]")
@click.option("--learning-rate", type=float, default=None, help="[default: 0.002]")
@click.option("--seed", type=int, default=None, help="Random seed, for reproducible runs [default: 0].")
@click.option("--validation-crops", type=click.IntRange(min=1), default=None,
              help="Crops of MNIST validation digits that choose the epoch [default: 1,000].")
@click.option("--frame-step", type=click.Choice(["4", "2"]), default=None,
              help="Strip columns between the reader's frames: 2 leaves out fewer close digits, for 1.7-2.1x "
                   "the training time [default: 4].")
@click.option("--distort/--no-distort", default=False, show_default=True,
              help="Bend each training batch afresh every epoch (elastic field, stretch, pen): 1.6x the time.")
@version_options
def strips(base: Path | None, crops: int | None, epochs: int | None, learning_rate: float | None, seed: int | None,
           validation_crops: int | None, frame_step: str | None, distort: bool, mnist_dir: Path | None,
           out: Path | None, publish: bool, promote: bool, redis_url: str) -> None:
    """Train a strip reader, which reads a whole postal-code crop in one pass, and publish it as a
    new version beside the digit model of --base (docs/training.md)."""
    from dataclasses import replace

    from digits.manifest import parse_manifest
    from digits.network import load_model
    from digits.registry import DEFAULT_MODEL_DIR
    from digits.theta import read_files
    from trainer import mnist
    from trainer.strips import StripRecipe, fit_strips

    base = base or DEFAULT_MODEL_DIR
    base_manifest = parse_manifest((base / "manifest.json").read_bytes(), str(base / "manifest.json"))
    if "strip_layers" in base_manifest:
        base_manifest = {k: v for k, v in base_manifest.items() if k != "strip_layers"}
    digit_files = read_files(base, model_files(base_manifest))
    model = load_model(digit_files, base_manifest, str(base))
    registry = Registry(connect(redis_url)) if publish else None
    if registry is not None:
        registry.redis.ping()  # fail before training, not after
    data = mnist.load(mnist_dir)
    train_images, train_labels, validation_images, validation_labels = data.split()
    defaults = StripRecipe()
    recipe = replace(defaults, crops=crops or defaults.crops, epochs=epochs or defaults.epochs,
                     learning_rate=learning_rate or defaults.learning_rate,
                     seed=defaults.seed if seed is None else seed,
                     validation_crops=validation_crops or defaults.validation_crops,
                     frame_step=int(frame_step or defaults.frame_step), distort=distort)
    click.echo(f"training a strip reader on {recipe.crops} generated crops, {recipe.epochs} epochs, "
               f"seed {recipe.seed}", err=True)
    trained = fit_strips(train_images, train_labels, validation_images, validation_labels, recipe,
                         report=lambda line: click.echo(line, err=True))
    files = {**digit_files, **trained.files}
    manifest = build_manifest(files, model, layers=None, preset=f"{base_manifest.get('preset', 'base')}-strips",
                              hyperparameters={**base_manifest.get("hyperparameters", {}),
                                               "strips": strip_hyperparameters(recipe)},
                              metrics={**base_manifest.get("metrics", {}), "strips": {
                                  "validation_whole_codes": trained.validation_whole,
                                  "best_epoch": trained.best_epoch,
                                  "temperature": trained.temperature,
                                  "train_seconds": round(trained.seconds, 1),
                                  "history": trained.history}})
    for field in ("layers", "hidden"):
        if field in base_manifest:
            manifest[field] = base_manifest[field]
    manifest["strip_layers"] = [layer.as_json() for layer in trained.layers]
    manifest["base_version"] = base_manifest["version"]
    click.echo(f"validation codes read whole {trained.validation_whole:.2%} (epoch {trained.best_epoch}), "
               f"{trained.seconds:.0f} s", err=True)
    release(files, manifest, base, out, registry, promote)


def release(files: dict[str, bytes], manifest: dict[str, Any], plots_from: Path, out: Path | None,
            registry: Registry | None, promote: bool) -> None:
    """Check that a strip version's files load as they will in a worker, then write it to --out
    and publish it; print its version id."""
    from digits.sweep import load_strip_reader

    load_strip_reader(files, manifest, manifest["version"])
    plots = {name: (plots_from / name).read_bytes() for name in PLOT_FILES if (plots_from / name).is_file()}
    if out is not None:
        write_dir(out, files, manifest, plots)
        click.echo(f"wrote {out}", err=True)
    if registry is not None:
        version = registry.publish(files, manifest, promote=promote, plots=plots)
        click.echo(f"published {version}" + (" (current)" if promote else ""), err=True)
    click.echo(manifest["version"])


@click.command()
@click.argument("model", type=click.Path(exists=True, file_okay=False, path_type=Path))
@version_options
def calibrate(model: Path, mnist_dir: Path | None, out: Path | None, publish: bool, promote: bool,
              redis_url: str) -> None:
    """Calibrate the strip reader of version directory MODEL (trained before strips were
    calibrated, or a calibrated one again: its temperature is then about 1) on the crops of MNIST
    validation digits its training chose the epoch on, and publish it as a new version."""
    from digits.manifest import parse_manifest, strip_layer_specs
    from digits.network import load_model
    from digits.theta import read_files
    from trainer import mnist
    from trainer.calibrate import calibrate as calibrated
    from trainer.calibrate import loss_summary
    from trainer.strips import validation_strips

    where = str(model / "manifest.json")
    manifest = parse_manifest((model / "manifest.json").read_bytes(), where)
    if "strip_layers" not in manifest:
        raise click.UsageError(f"{where}: the version has no strip reader (no strip_layers)")
    layers = strip_layer_specs(manifest["strip_layers"], where)
    files = read_files(model, [*model_files(manifest), *(layer.file for layer in layers if layer.file)])
    registry = Registry(connect(redis_url)) if publish else None
    if registry is not None:
        registry.redis.ping()
    recipe = manifest.get("hyperparameters", {}).get("strips", {})
    _, _, validation_images, validation_labels = mnist.load(mnist_dir).split()
    validation = validation_strips(validation_images, validation_labels, int(recipe.get("validation_crops", 1000)),
                                   int(recipe.get("seed", 0)), workers=os.cpu_count() or 1)
    files, temperature, losses = calibrated(files, layers, validation)
    click.echo(loss_summary(temperature, losses), err=True)
    metrics = manifest.get("metrics", {})
    strips_metrics = {**metrics.get("strips", {}),
                      "temperature": round(float(metrics.get("strips", {}).get("temperature", 1.0)) * temperature, 4)}
    new = build_manifest(files, load_model(files, manifest, where), layers=None,
                         preset=str(manifest.get("preset", "strips")),
                         hyperparameters=manifest.get("hyperparameters", {}),
                         metrics={**metrics, "strips": strips_metrics})
    for field in ("layers", "hidden", "strip_layers", "base_version"):
        if field in manifest:
            new[field] = manifest[field]
    release(files, new, model, out, registry, promote)


def strip_hyperparameters(recipe: StripRecipe) -> dict[str, Any]:
    return {"crops": recipe.crops, "epochs": recipe.epochs, "learning_rate": recipe.learning_rate,
            "channels": list(recipe.channels), "seed": recipe.seed, "validation_crops": recipe.validation_crops,
            "distort": recipe.distort, "dropout": recipe.dropout, "frame_step": recipe.frame_step}
