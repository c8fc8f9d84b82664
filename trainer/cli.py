"""`digits-trainer`: train and publish versions, and manage the registry (list, show, promote...)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from digits.connection import Group, connect, redis_url_option
from digits.registry import Registry, RegistryError, build_manifest, write_dir
from digits.theta import ThetaError
from trainer.options import version_options
from trainer.strips_cli import calibrate, strips

if TYPE_CHECKING:
    from trainer.keyed import KeyedSet


def registry_at(url: str) -> Registry:
    return Registry(connect(url))


def fail(exc: Exception) -> None:
    raise click.ClickException(str(exc)) from None


@click.group(cls=Group)
def main() -> None:
    """Train the digit recognisers and manage the versions that workers serve."""


@main.command()
@click.option("--preset", default="seed", show_default=True,
              help="Training recipe: seed, best (MLPs) or cnn (docs/training.md).")
@click.option("--steps", type=int, default=None, help="Override the preset's number of mini-batches.")
@click.option("--hidden", type=int, default=None,
              help="Override the hidden size H (cnn: the dense layer after the convolutions).")
@click.option("--learning-rate", type=float, default=None)
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Share of the last hidden layer's units dropped in each training step.")
@click.option("--batch-size", type=int, default=None)
@click.option("--init", type=click.Choice(["glorot", "normal"]), default=None)
@click.option("--stroke", type=click.FloatRange(0, 1), default=None,
              help="With distortions: train on pens up to this share bolder or finer (0: off).")
@click.option("--crops", type=click.IntRange(min=0), default=None,
              help="Train also on the candidate digits the postal-code reader cuts from this many generated crops.")
@click.option("--seed", type=int, default=None, help="Random seed, for reproducible runs.")
@click.option("--corrections", "correction_dirs", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Also train on the digits of an export of `digits-producer corrections` (repeatable).")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where an interrupted run resumes from [default: .checkpoints/PRESET-HASH].")
@version_options
def train(preset: str, steps: int | None, hidden: int | None, learning_rate: float | None, dropout: float | None,
          batch_size: int | None, init: str | None, stroke: float | None, crops: int | None, seed: int | None,
          correction_dirs: tuple[Path, ...], mnist_dir: Path | None,
          out: Path | None, checkpoint_dir: Path | None, publish: bool, promote: bool, redis_url: str) -> None:
    """Train a preset on MNIST, evaluate it, export its theta CSVs and plots, and publish a version.

    Run the same command again after an interruption: it resumes from the last finished epoch.
    """
    from trainer import mnist
    from trainer.plots import version_plots
    from trainer.train import PRESETS, describe, hyperparameters, preset_with
    from trainer.train import train as fit

    if preset not in PRESETS:
        raise click.BadParameter(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}", param_hint="--preset")
    recipe = preset_with(preset, steps=steps, hidden=hidden, learning_rate=learning_rate, dropout=dropout,
                         batch_size=batch_size, init=init, stroke=stroke, crops=crops, seed=seed)
    registry = registry_at(redis_url) if publish else None
    if registry is not None:
        registry.redis.ping()  # fail before training, not after
    data = mnist.load(mnist_dir)
    keyed = corrections_of(correction_dirs)
    fingerprint = hashlib.sha256((describe(recipe) + "".join(k.fingerprint for k in keyed)).encode()).hexdigest()[:10]
    checkpoint_dir = checkpoint_dir or Path(".checkpoints") / f"{recipe.name}-{fingerprint}"
    resuming = (checkpoint_dir / "journal.json").is_file()
    click.echo(f"{'resuming' if resuming else 'training'} {describe(recipe)}\n"
               f"checkpoints in {checkpoint_dir}: if interrupted, run the same command again to resume", err=True)
    trained = fit(data, recipe, report=lambda line: click.echo(line, err=True), checkpoint_dir=checkpoint_dir,
                  keyed=keyed)
    manifest = build_manifest(trained.files, trained.model, layers=trained.layers, preset=recipe.name,
                              hyperparameters=hyperparameters(recipe), metrics={
                                  "validation_accuracy": trained.validation_accuracy,
                                  "test_accuracy": trained.test_accuracy,
                                  "train_seconds": round(trained.seconds, 1),
                                  "best_epoch": trained.best_epoch,
                                  "history": trained.history,
                              })
    if keyed:
        manifest["corrections"] = [k.summary() for k in keyed]
    plots = version_plots(trained.model, trained.history, f"{recipe.name}: training and validation accuracy",
                          data.test_images, data.test_labels,
                          train_label=training_label(recipe.distort, recipe.crops > 0))
    click.echo(f"validation accuracy {trained.validation_accuracy:.4f}, "
               f"test accuracy {trained.test_accuracy:.4f}, {trained.seconds:.0f} s", err=True)
    if out is not None:
        write_dir(out, trained.files, manifest, plots)
        click.echo(f"wrote {out}", err=True)
    if registry is not None:
        version = registry.publish(trained.files, manifest, promote=promote, plots=plots)
        click.echo(f"published {version}" + (" (current)" if promote else ""), err=True)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    click.echo(manifest["version"])


main.add_command(strips)
main.add_command(calibrate)


def corrections_of(directories: tuple[Path, ...]) -> list[KeyedSet]:
    """The keyed digits of each corrections export, cut by the bundled model's reader."""
    if not directories:
        return []
    from digits.network import load_model_dir
    from digits.registry import DEFAULT_MODEL_DIR
    from trainer.keyed import KeyedError, load_sets

    try:
        return load_sets(list(directories), load_model_dir(DEFAULT_MODEL_DIR), lambda line: click.echo(line, err=True))
    except KeyedError as exc:
        raise click.ClickException(str(exc)) from None


def training_label(distorted: bool, cut: bool = False) -> str:
    """Training accuracy is Keras' running average over the epoch's batches (distorted digits, and
    the digits cut from crops, if so trained)."""
    digits = ("distorted digits" if distorted else "digits") + (" and digits cut from crops" if cut else "")
    return f"Training ({digits}, average over the epoch)"


@main.command("list")
@redis_url_option
def list_versions(redis_url: str) -> None:
    """List published versions, oldest first; * marks current."""
    registry = registry_at(redis_url)
    current = registry.current()
    for version in registry.versions():
        metrics = registry.manifest(version).get("metrics", {})
        test = metrics.get("test_accuracy")
        accuracy = f"test {test:.4f}" if isinstance(test, float) else "test -"
        click.echo(f"{'*' if version == current else ' '} {version}  {accuracy}")


@main.command()
@click.argument("version", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@redis_url_option
def show(version: str | None, as_json: bool, redis_url: str) -> None:
    """Print a version's metrics and say where its plots are (default: current)."""
    registry = registry_at(redis_url)
    version = version or registry.current()
    if version is None:
        fail(RegistryError("no current version"))
        return
    try:
        manifest = registry.manifest(version)
    except RegistryError as exc:
        fail(exc)
    metrics = manifest.get("metrics", {})
    history = metrics.pop("history", None)
    if as_json:
        click.echo(json.dumps(manifest, indent=2, sort_keys=True))
        return
    click.echo(f"version     {version}{' (current)' if version == registry.current() else ''}")
    architecture = manifest.get("architecture") or f"dense{manifest.get('hidden', '?')}-dense10"
    click.echo(f"preset      {manifest.get('preset', '-')}, {architecture}, "
               f"created {manifest.get('created_at', '-')}")
    for name, value in sorted(flat(metrics).items()):
        shown = f"{value:.4f}" if isinstance(value, float) and value <= 1 else str(value)
        click.echo(f"{name:<20}{shown}")
    if history:
        click.echo(f"{'epochs':<20}{len(history.get('validation', []))}")
    plots = registry.plots(version)
    if plots:
        click.echo(f"plots       {', '.join(plots)}: stored with the version in Redis; "
                   f"`digits-trainer export {version} DIR` writes them to DIR")
    else:
        click.echo("plots       none (imported without them)")


def flat(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested metrics (a strip reader's, under `strips`) as dotted names; histories left out."""
    found: dict[str, Any] = {}
    for name, value in metrics.items():
        if isinstance(value, dict):
            found.update(flat(value, f"{prefix}{name}.") if name != "history" else {})
        else:
            found[prefix + name] = value
    return found


@main.command()
@click.argument("versions", nargs=-1)
@click.option("--mnist-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None)
@redis_url_option
def robustness(versions: tuple[str, ...], mnist_dir: Path | None, redis_url: str) -> None:
    """Test accuracy of VERSIONS (default: current) on perturbed test digits: stroke width,
    slant, scale, blur, noise and off-centre placement."""
    from trainer import mnist
    from trainer.perturb import robustness as measure

    registry = registry_at(redis_url)
    chosen = list(versions) or [v for v in [registry.current()] if v]
    if not chosen:
        fail(RegistryError("no current version; name the versions to compare"))
    try:
        models = {v: registry.load(v).model for v in chosen}
    except (RegistryError, ThetaError) as exc:
        fail(exc)
    data = mnist.load(mnist_dir)
    table = measure(models, data.test_images, data.test_labels)
    width = max(len(name) for name in table)
    click.echo(f"{'perturbation':<{width}}  " + "  ".join(chosen))
    for name, accuracies in table.items():
        click.echo(f"{name:<{width}}  " + "  ".join(f"{accuracies[v]:>{len(v)}.2%}" for v in chosen))


@main.command()
@click.argument("version")
@redis_url_option
def promote(version: str, redis_url: str) -> None:
    """Make VERSION current; workers switch at their next job."""
    try:
        registry_at(redis_url).promote(version)
    except RegistryError as exc:
        fail(exc)
    click.echo(f"current is now {version}")


@main.command()
@redis_url_option
def rollback(redis_url: str) -> None:
    """Move current back to the version before the last promotion."""
    try:
        version = registry_at(redis_url).rollback()
    except RegistryError as exc:
        fail(exc)
    click.echo(f"current is now {version}")


@main.command()
@click.argument("version")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@redis_url_option
def export(version: str, directory: Path, redis_url: str) -> None:
    """Write VERSION as plain CSV files (theta1.csv and theta2.csv, or one per layer) and
    manifest.json in DIRECTORY."""
    try:
        registry_at(redis_url).export(version, directory)
    except (RegistryError, ThetaError) as exc:
        fail(exc)
    click.echo(str(directory))


@main.command("import")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--promote", is_flag=True, help="Make the imported version current.")
@redis_url_option
def import_dir(directory: Path, promote: bool, redis_url: str) -> None:
    """Publish a directory of theta CSVs (plain or .gz: the seed's pair, or layer files listed by
    its manifest.json) as a new version."""
    try:
        version = registry_at(redis_url).publish_dir(directory, promote=promote)
    except (RegistryError, ThetaError) as exc:
        fail(exc)
    click.echo(version)
