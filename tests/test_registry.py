"""The Redis model registry (digits/registry.py), against a real private redis-server.

Versions are immutable and either whole or absent; `current` moves only to published versions
and can be rolled back; what is stored is checked against the manifest's sha256 on every read.
"""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import redis

from digits import keys
from digits.network import load_model
from digits.registry import DEFAULT_MODEL_DIR, Registry, RegistryError, build_manifest
from digits.theta import Model, ThetaError, sha256_hex, to_csv
from tests.conftest import cnn_manifest, random_cnn

F64 = npt.NDArray[np.float64]

DEFAULT_FILES = {name: gzip.decompress((DEFAULT_MODEL_DIR / f"{name}.gz").read_bytes())
                 for name in ("theta1.csv", "theta2.csv")}
DEFAULT_MANIFEST: dict[str, Any] = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())


def small_model(hidden: int = 3, seed: int = 0) -> tuple[bytes, bytes]:
    """A tiny valid model as the seed would write it: quick to publish many times."""
    rng = np.random.default_rng(seed)
    return to_csv(rng.normal(size=(785, hidden))), to_csv(rng.normal(size=(hidden + 1, 10)))


def pair(theta1: bytes, theta2: bytes) -> dict[str, bytes]:
    return {"theta1.csv": theta1, "theta2.csv": theta2}


def pair_manifest(theta1: bytes, theta2: bytes, version: str) -> dict[str, Any]:
    files = pair(theta1, theta2)
    return build_manifest(files, load_model(files, None, "test"), preset="test", version=version)


def publish_small(registry: Registry, version: str, seed: int = 0, promote: bool = False) -> str:
    theta1, theta2 = small_model(seed=seed)
    return registry.publish(pair(theta1, theta2), pair_manifest(theta1, theta2, version), promote=promote)


def snapshot(connection: redis.Redis) -> dict[bytes, bytes]:
    """Every key and its serialised value: the whole state of the registry's Redis."""
    state: dict[bytes, bytes] = {}
    for key in connection.keys("*"):
        dumped = connection.dump(key)
        assert isinstance(key, bytes) and isinstance(dumped, bytes)
        state[key] = dumped
    return state


# -- publishing --------------------------------------------------------------------------------

def test_publish_default_model(registry: Registry, default_version: str) -> None:
    """The bundled model is published under its own manifest's version and becomes current."""
    assert default_version == DEFAULT_MANIFEST["version"]
    assert registry.versions() == [default_version]
    assert registry.current() == default_version
    readers = registry.load(default_version)
    assert readers.model.architecture == "dense1024-dense10"
    assert readers.manifest == DEFAULT_MANIFEST


def test_manifest_fields(registry: Registry, default_version: str) -> None:
    """Operators and workers rely on these fields to know what a version is and how good it is."""
    manifest = registry.manifest(default_version)
    assert manifest["version"] == default_version
    assert datetime.fromisoformat(manifest["created_at"]).tzinfo is not None
    for name, shape in (("theta1.csv", [785, 1024]), ("theta2.csv", [1025, 10])):
        assert manifest["files"][name]["sha256"] == sha256_hex(DEFAULT_FILES[name])
        assert manifest["files"][name]["shape"] == shape
    assert manifest["model_sha256"] == sha256_hex(DEFAULT_FILES["theta1.csv"], DEFAULT_FILES["theta2.csv"])
    assert manifest["hidden"] == 1024
    assert manifest["preset"] == "best"
    assert manifest["hyperparameters"]["hidden"] == 1024
    assert isinstance(manifest["hyperparameters"]["learning_rate"], float)
    assert 0.99 < manifest["metrics"]["validation_accuracy"] <= 1.0
    assert 0.993 <= manifest["metrics"]["test_accuracy"] <= 1.0
    assert {"python", "numpy"} <= set(manifest["libraries"])


def test_stored_files_are_the_published_bytes(registry: Registry, connection: redis.Redis,
                                              default_version: str) -> None:
    """Workers get exactly the trainer's CSV bytes: stored gzipped, returned plain."""
    files, manifest = registry.files(default_version)
    assert files == DEFAULT_FILES
    assert manifest["version"] == default_version
    stored = connection.hget(keys.model(default_version), "theta1")
    assert isinstance(stored, bytes) and stored[:2] == b"\x1f\x8b"


def test_versions_are_immutable(registry: Registry, connection: redis.Redis, default_version: str) -> None:
    """Re-publishing a version id, even with other weights, must fail and change nothing."""
    before = snapshot(connection)
    other1, other2 = small_model()
    manifest = pair_manifest(other1, other2, default_version)
    with pytest.raises(RegistryError, match=f"version {default_version} already exists"):
        registry.publish(pair(other1, other2), manifest, promote=True)
    with pytest.raises(RegistryError, match="already exists"):
        registry.publish_dir(DEFAULT_MODEL_DIR)
    assert snapshot(connection) == before
    assert registry.files(default_version)[0] == DEFAULT_FILES


def valid_csvs() -> dict[str, bytes]:
    theta1, theta2 = small_model()
    return {"theta1.csv": theta1, "theta2.csv": theta2}


def bad_csvs(case: str) -> dict[str, bytes]:
    """A model with one broken file."""
    files = valid_csvs()
    lines = files["theta1.csv"].splitlines(keepends=True)
    if case == "wrong shape":
        files["theta1.csv"] = b"".join(lines[:-1])  # 784 rows
    elif case == "mismatched pair":
        files["theta2.csv"] = b"".join(files["theta2.csv"].splitlines(keepends=True)[:-1])
    elif case == "nan":
        lines[5] = b"nan," + lines[5].split(b",", 1)[1]
        files["theta1.csv"] = b"".join(lines)
    elif case == "truncated csv":
        data = files["theta1.csv"]
        files["theta1.csv"] = data[: len(data) * 2 // 3]
    elif case == "truncated gzip":
        data = gzip.compress(files["theta1.csv"])
        files["theta1.csv"] = data[: len(data) // 2]
    else:
        raise AssertionError(case)
    return files


BAD_CASES = [
    "wrong shape",
    "mismatched pair",
    "nan",
    "truncated csv",
    "truncated gzip",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_publish_refuses_a_bad_theta_and_leaves_no_trace(case: str, registry: Registry,
                                                         connection: redis.Redis) -> None:
    """A half-valid model must never reach Redis: no key, no version entry, current untouched."""
    publish_small(registry, "v0", promote=True)
    files = bad_csvs(case)
    before = snapshot(connection)
    manifest = small_manifest("bad-1")[2]
    with pytest.raises(ThetaError, match=r"theta[12]\.csv"):
        registry.publish(files, manifest, promote=True)
    assert snapshot(connection) == before
    assert "bad-1" not in registry.versions()
    assert not connection.exists(keys.model("bad-1"))
    assert registry.current() == "v0"


@pytest.mark.parametrize("case", BAD_CASES)
def test_publish_dir_refuses_a_bad_theta_and_leaves_no_trace(case: str, tmp_path: Path, registry: Registry,
                                                             connection: redis.Redis) -> None:
    """The same through a directory import, which builds its manifest only after validation."""
    for name, data in bad_csvs(case).items():
        suffix = ".gz" if data[:2] == b"\x1f\x8b" else ""
        (tmp_path / (name + suffix)).write_bytes(data)
    with pytest.raises(ThetaError, match=r"theta[12]\.csv"):
        registry.publish_dir(tmp_path, promote=True)
    assert snapshot(connection) == {}
    assert registry.versions() == []
    assert registry.current() is None


@pytest.mark.parametrize("tamper", ["manifest", "weights"])
def test_sha256_mismatch_is_refused(tamper: str, tmp_path: Path, registry: Registry,
                                    connection: redis.Redis) -> None:
    """Files that are not the ones the manifest describes (edited or corrupted) are refused."""
    directory = Path(shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / "model"))
    if tamper == "manifest":
        manifest = json.loads((directory / "manifest.json").read_text())
        manifest["files"]["theta2.csv"]["sha256"] = "0" * 64
        (directory / "manifest.json").write_text(json.dumps(manifest))
    else:  # one weight changed, still a perfectly valid CSV
        lines = DEFAULT_FILES["theta2.csv"].splitlines(keepends=True)
        lines[7] = to_csv(np.full((1, 10), 0.25))
        (directory / "theta2.csv.gz").write_bytes(gzip.compress(b"".join(lines)))
    with pytest.raises(RegistryError, match=r"theta2\.csv: sha256 [0-9a-f]{64} does not match"):
        registry.publish_dir(directory, promote=True)
    assert snapshot(connection) == {}


# -- current, promote, rollback ----------------------------------------------------------------

def test_promote_and_rollback_sequence(registry: Registry) -> None:
    """v1 -> v2 -> v3, then back one step at a time, and no further than the first."""
    for seed, version in enumerate(("v1", "v2", "v3")):
        publish_small(registry, version, seed=seed)
    assert registry.current() is None
    for version in ("v1", "v2", "v3"):
        registry.promote(version)
        assert registry.current() == version
    assert registry.versions() == ["v1", "v2", "v3"]

    assert registry.rollback() == "v2"
    assert registry.current() == "v2"
    assert registry.rollback() == "v1"
    assert registry.current() == "v1"
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback()
    assert registry.current() == "v1"
    assert registry.versions() == ["v1", "v2", "v3"]  # rollback moves the pointer, deletes nothing


def test_promoting_the_current_version_again_adds_no_rollback_step(registry: Registry) -> None:
    publish_small(registry, "v1", promote=True)
    publish_small(registry, "v2", seed=1, promote=True)
    registry.promote("v2")
    assert registry.rollback() == "v1"
    with pytest.raises(RegistryError):
        registry.rollback()


def test_rollback_with_nothing_published(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback()
    assert registry.current() is None


def test_promote_of_an_unknown_version_is_refused(registry: Registry, connection: redis.Redis) -> None:
    publish_small(registry, "v0", promote=True)
    before = snapshot(connection)
    with pytest.raises(RegistryError, match="no such version: 20990101-000000-nope-00000000"):
        registry.promote("20990101-000000-nope-00000000")
    assert snapshot(connection) == before
    assert registry.current() == "v0"


@pytest.mark.parametrize("read", ["manifest", "files", "load"])
def test_reading_an_unknown_version_is_refused(read: str, registry: Registry) -> None:
    with pytest.raises(RegistryError, match="no such version: missing"):
        getattr(registry, read)("missing")


# -- export and import -------------------------------------------------------------------------

def test_export_then_import_round_trips_the_exact_bytes(tmp_path: Path, registry: Registry,
                                                        default_version: str) -> None:
    """Moving a model between registries through a directory must not change one byte."""
    exported = registry.export(default_version, tmp_path / "export")
    assert sorted(p.name for p in exported.iterdir()) == [
        "accuracy.png", "confusion.png", "manifest.json", "theta1.csv", "theta2.csv", "worst.png"]
    for plot in ("accuracy.png", "confusion.png", "worst.png"):  # the bundled plots travel with the version
        assert (exported / plot).read_bytes() == (DEFAULT_MODEL_DIR / plot).read_bytes()
    assert (exported / "theta1.csv").read_bytes() == DEFAULT_FILES["theta1.csv"]
    assert (exported / "theta2.csv").read_bytes() == DEFAULT_FILES["theta2.csv"]

    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest == DEFAULT_MANIFEST
    manifest["version"] = "copy-1"
    (exported / "manifest.json").write_text(json.dumps(manifest))
    assert registry.publish_dir(exported) == "copy-1"

    files, copied = registry.files("copy-1")
    assert files == DEFAULT_FILES
    assert copied["files"] == DEFAULT_MANIFEST["files"]
    assert copied["model_sha256"] == DEFAULT_MANIFEST["model_sha256"]
    assert registry.plots("copy-1") == registry.plots(default_version)
    assert registry.current() == default_version  # importing does not promote


def test_export_without_manifest_imports_as_a_new_version(tmp_path: Path, registry: Registry,
                                                          default_version: str) -> None:
    """Dropping manifest.json makes the import build a fresh manifest for the same bytes."""
    exported = registry.export(default_version, tmp_path / "export")
    (exported / "manifest.json").unlink()
    version = registry.publish_dir(exported)
    assert version != default_version
    manifest = registry.manifest(version)
    assert manifest["preset"] == "imported"
    assert manifest["files"] == DEFAULT_MANIFEST["files"]
    assert manifest["model_sha256"] == DEFAULT_MANIFEST["model_sha256"]
    assert registry.files(version)[0] == DEFAULT_FILES


def test_layer_files_without_their_manifest_are_refused(tmp_path: Path, registry: Registry) -> None:
    """A strip version exported without its manifest used to import as its seed pair alone, the
    strip reader dropped without a word: only the manifest says how layer files chain."""
    for name in ("theta1.csv.gz", "theta2.csv.gz"):
        shutil.copy(DEFAULT_MODEL_DIR / name, tmp_path / name)
    (tmp_path / "strip1.csv").write_text("0.0,0.0\n1.0,1.0\n")
    before = registry.versions()
    with pytest.raises(RegistryError, match=r"strip1\.csv but no manifest\.json"):
        registry.publish_dir(tmp_path)
    assert registry.versions() == before
    (tmp_path / "strip1.csv").unlink()
    assert registry.publish_dir(tmp_path) not in before  # the pair alone is the seed's MLP, as ever


def test_importing_the_seeds_plain_csvs_builds_a_manifest(tmp_path: Path, registry: Registry) -> None:
    """The 2017 notebook's two files, no manifest: they import as preset "imported"."""
    rng = np.random.default_rng(2017)
    theta1, theta2 = rng.normal(size=(785, 300)), rng.normal(size=(301, 10))
    np.savetxt(tmp_path / "theta1.csv", theta1, delimiter=",")
    np.savetxt(tmp_path / "theta2.csv", theta2, delimiter=",")
    plain1, plain2 = (tmp_path / "theta1.csv").read_bytes(), (tmp_path / "theta2.csv").read_bytes()

    version = registry.publish_dir(tmp_path, promote=True)
    assert registry.versions() == [version] and registry.current() == version
    manifest = registry.manifest(version)
    assert manifest["version"] == version
    assert manifest["preset"] == "imported"
    assert f"-imported-{sha256_hex(plain1, plain2)[:8]}" in version
    assert manifest["hidden"] == 300
    assert manifest["files"]["theta1.csv"] == {"sha256": sha256_hex(plain1), "shape": [785, 300]}
    assert manifest["files"]["theta2.csv"] == {"sha256": sha256_hex(plain2), "shape": [301, 10]}
    assert manifest["source"] == f"import:{tmp_path}"
    assert datetime.fromisoformat(manifest["created_at"]).tzinfo is not None
    loaded = registry.load(version).model
    assert isinstance(loaded, Model)
    np.testing.assert_allclose(loaded.w1, theta1[1:], rtol=1e-6)
    np.testing.assert_allclose(loaded.b2, theta2[0], rtol=1e-6)


# -- corruption --------------------------------------------------------------------------------

def test_files_detects_a_replaced_theta(tmp_path: Path, registry: Registry, connection: redis.Redis,
                                        default_version: str) -> None:
    """A stored file swapped for another valid model must be caught on read, not served."""
    other1, _ = small_model(hidden=300)
    connection.hset(keys.model(default_version), "theta1", gzip.compress(other1))
    for read in (registry.files, registry.load):
        with pytest.raises((ThetaError, RegistryError), match=r"theta1\.csv does not match its manifest sha256"):
            read(default_version)
    with pytest.raises((ThetaError, RegistryError)):
        registry.export(default_version, tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_files_detects_a_garbled_theta(registry: Registry, connection: redis.Redis,
                                       default_version: str) -> None:
    connection.hset(keys.model(default_version), "theta2", b"not gzip at all")
    with pytest.raises((ThetaError, RegistryError), match=r"theta2\.csv"):
        registry.files(default_version)


@pytest.mark.parametrize("version", ["versions", "current", "history"])
def test_a_version_id_cannot_clobber_the_registrys_own_keys(version: str, registry: Registry) -> None:
    """A version named like an index key must be refused or kept apart; the registry must keep working."""
    theta1, theta2 = small_model()
    manifest = pair_manifest(theta1, theta2, version)
    try:
        registry.publish(pair(theta1, theta2), manifest)
        accepted = True
    except RegistryError:
        accepted = False
    publish_small(registry, "v1", seed=1, promote=True)
    publish_small(registry, "v2", seed=2, promote=True)
    assert registry.rollback() == "v1"
    assert registry.current() == "v1"
    assert registry.versions() == ([version] if accepted else []) + ["v1", "v2"]
    if accepted:
        assert registry.files(version)[0] == pair(theta1, theta2)


def small_manifest(version: str = "m1") -> tuple[bytes, bytes, dict[str, Any]]:
    theta1, theta2 = small_model()
    return theta1, theta2, pair_manifest(theta1, theta2, version)


BAD_MANIFESTS: list[tuple[str, Any, str]] = [
    ("no files", lambda m: m.pop("files"), "files is missing or not an object"),
    ("no theta2", lambda m: m["files"].pop("theta2.csv"), r"files\.theta2\.csv\.sha256 is missing"),
    ("sha not hex", lambda m: m["files"]["theta1.csv"].update(sha256="xyz"), r"files\.theta1\.csv\.sha256"),
    ("no model_sha256", lambda m: m.pop("model_sha256"), "model_sha256 is missing"),
    ("version a number", lambda m: m.update(version=12345), "version 12345 is not a version id"),
    ("a reserved version", lambda m: m.update(version="current"), "version 'current' is not a version id"),
]


@pytest.mark.parametrize(("case", "damage", "message"), BAD_MANIFESTS, ids=[c[0] for c in BAD_MANIFESTS])
def test_import_refuses_a_bad_manifest_naming_the_file_and_field(case: str, damage: Any, message: str,
                                                                  tmp_path: Path, registry: Registry) -> None:
    """A manifest with no files, no model_sha256 or {"version": 12345} was imported and promoted,
    and every worker then failed every job with KeyError: 'files'."""
    theta1, theta2, manifest = small_manifest()
    damage(manifest)
    for name, data in (("theta1.csv", theta1), ("theta2.csv", theta2)):
        (tmp_path / name).write_bytes(data)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RegistryError, match=f"{tmp_path}/manifest.json: {message}"):
        registry.publish_dir(tmp_path, promote=True)
    assert registry.versions() == [] and registry.current() is None


@pytest.mark.parametrize(("text", "message"), [("[]", "a manifest is a JSON object, not list"),
                                               ("{not json", "not JSON"), ("", "not JSON")])
def test_import_refuses_a_manifest_that_is_not_an_object(text: str, message: str, tmp_path: Path,
                                                         registry: Registry) -> None:
    theta1, theta2, _ = small_manifest()
    (tmp_path / "theta1.csv").write_bytes(theta1)
    (tmp_path / "theta2.csv").write_bytes(theta2)
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(RegistryError, match=f"manifest.json: {message}"):
        registry.publish_dir(tmp_path)


def test_publish_refuses_a_model_sha256_of_other_files(registry: Registry) -> None:
    theta1, theta2, manifest = small_manifest()
    manifest["model_sha256"] = sha256_hex(b"other")
    with pytest.raises(RegistryError, match=r"model_sha256 \w+ is not the sha256 of theta1\.csv, theta2\.csv"):
        registry.publish(pair(theta1, theta2), manifest)


def test_promote_and_rollback_refuse_a_version_that_cannot_load(registry: Registry, connection: redis.Redis) -> None:
    """A version written straight into Redis with a broken manifest (or files) is never made current."""
    publish_small(registry, "good-1", promote=True)
    publish_small(registry, "good-2", seed=1, promote=True)
    connection.copy(keys.model("good-1"), keys.model("broken"))
    connection.hset(keys.model("broken"), "manifest", json.dumps({"version": "broken"}))
    with pytest.raises(RegistryError, match="version broken: manifest: files is missing"):
        registry.promote("broken")
    connection.hset(keys.model("good-1"), "theta1", gzip.compress(b"1,2,3\n"))  # now the rollback target is bad
    with pytest.raises(RegistryError, match="version good-1 cannot be served"):
        registry.rollback()
    assert registry.current() == "good-2"
    with pytest.raises(RegistryError, match="version broken: manifest: files is missing"):
        registry.manifest("broken")


# -- N-layer versions --------------------------------------------------------------------------

def test_a_cnn_version_exports_and_imports_to_the_same_sha256(tmp_path: Path, registry: Registry,
                                                              connection: redis.Redis) -> None:
    """Each layer is its own CSV in the seed's format, stored as its own field; export writes
    them with the manifest and import reads them back to the same bytes."""
    files = random_cnn()
    manifest = cnn_manifest(files, "cnn-1")
    registry.publish(files, manifest)
    fields = connection.hkeys(keys.model("cnn-1"))
    assert sorted(fields) == [b"layer1", b"layer2", b"layer3", b"layer4", b"manifest"]
    exported = registry.export("cnn-1", tmp_path / "export")
    assert sorted(p.name for p in exported.iterdir()) == [*files, "manifest.json"]
    for name, data in files.items():
        assert (exported / name).read_bytes() == data
        assert np.loadtxt(exported / name, delimiter=",", ndmin=2).shape[0] == data.count(b"\n")
    (exported / "layer3.csv.gz").write_bytes(gzip.compress((exported / "layer3.csv").read_bytes()))
    (exported / "layer3.csv").unlink()  # gzipped layers import too
    manifest["version"] = "cnn-2"
    (exported / "manifest.json").write_text(json.dumps(manifest))
    assert registry.publish_dir(exported, promote=True) == "cnn-2"
    copied, again = registry.files("cnn-2")
    assert copied == files and again["model_sha256"] == sha256_hex(*files.values()) == manifest["model_sha256"]
    model = registry.load("cnn-2").model
    assert model.architecture == "conv3x16-pool2-conv3x32-pool2-dense8-dense10"


def test_a_cnn_version_with_a_bad_layer_leaves_no_trace(registry: Registry, connection: redis.Redis) -> None:
    """A model is never half-loaded: one layer that does not chain refuses the whole version."""
    publish_small(registry, "v0", promote=True)
    files = random_cnn()
    manifest = cnn_manifest(files, "cnn-bad")
    files["layer2.csv"] = to_csv(np.ones((100, 32)))
    before = snapshot(connection)
    with pytest.raises(ThetaError, match=r"cnn-bad/layer2\.csv, layer 3 \(conv\): 100 rows"):
        registry.publish(files, manifest, promote=True)
    assert snapshot(connection) == before and registry.current() == "v0"
    with pytest.raises(RegistryError, match=r"manifest names the files layer1\.csv, layer2\.csv, layer3\.csv"):
        registry.publish({"layer1.csv": files["layer1.csv"]}, manifest)

