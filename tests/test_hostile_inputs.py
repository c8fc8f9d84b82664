"""A corpus of hostile inputs, generated here: each gets its own clear result, no worker dies,
and the rest of the batch goes on."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, Digits, WorkerPool

StartWorkers = Callable[..., WorkerPool]
# Root reads a file whatever its mode; without these two capabilities a mode-000 file is unreadable to it too.
WITHOUT_ROOTS_READ_ALL = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid greyscale PNG of width x height zeros, compressed to a few kilobytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    rows = zlib.compress(b"\x00" * ((width + 1) * height), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def build_corpus(folder: Path, outside: Path, digit: np.ndarray) -> dict[str, str]:
    """Write the corpus; return file name -> what its result must say (an error fragment, or a digit)."""
    grey = Image.fromarray(digit.reshape(28, 28))
    scan = Image.fromarray(255 - np.kron(digit.reshape(28, 28), np.ones((3, 3), dtype=np.uint8)))
    expected = {}

    def put(name: str, data: bytes, outcome: str) -> None:
        (folder / name).write_bytes(data)
        expected[name] = outcome

    put("good.png", encode(grey, "PNG"), "digit")
    put("zero-bytes.png", b"", "empty file (0 bytes)")
    put("truncated.png", encode(grey, "PNG")[:60], "cannot decode image")
    put("text.png", b"postcode 12345, not an image\n", "not a recognised image format")
    put("jpeg-named.png", encode(grey, "JPEG", quality=95), "digit")
    put("one-pixel.png", encode(Image.new("L", (1, 1), 255), "PNG"), "no digits found")
    put("sixteen-bit.png", encode(Image.fromarray(digit.reshape(28, 28).astype(np.uint16) * 257), "PNG"), "digit")
    put("cmyk.jpg", encode(scan.convert("CMYK"), "JPEG", quality=95), "digit")
    palette = grey.convert("P")
    put("palette-transparent.png", encode(palette, "PNG", transparency=0), "digit")
    frames = [grey, Image.new("L", (28, 28), 0)]
    put("animated.gif", encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100), "digit")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: the viewer must turn it 90 degrees clockwise
    put("exif-rotated.jpg", encode(scan.rotate(90, expand=True), "JPEG", quality=95, exif=exif), "digit")
    put("bomb.png", bomb_png(12_000, 12_000), "over the limit")
    salt = np.where(np.random.default_rng(0).random((100, 300)) < 0.05, 0, 255).astype(np.uint8)
    put("salt-noise.png", encode(Image.fromarray(salt), "PNG"), "separate pieces of ink, over the limit")  # ran >60 s
    put("huge-rgb.png", encode(Image.new("RGB", (3000, 3000), "white"), "PNG"), "bytes decoded, over the limit")
    put("fifty-megabytes.png", encode(grey, "PNG") + b"\x00" * (50 * 1024 * 1024), "over the size limit")
    (folder / "broken-link.png").symlink_to(folder / "does-not-exist.png")
    expected["broken-link.png"] = "broken symbolic link"
    (outside / "secret.png").write_bytes(encode(grey, "PNG"))
    (folder / "escape.png").symlink_to(outside / "secret.png")
    expected["escape.png"] = "outside the enqueued folder"
    put("unreadable.png", encode(grey, "PNG"), "cannot read file: Permission denied")
    (folder / "unreadable.png").chmod(0)
    os.mkfifo(folder / "pipe.png")
    expected["pipe.png"] = "not a regular file"
    with open(os.fsencode(folder) + b"/latin1-\xe9t\xe9.png", "wb") as handle:
        handle.write(encode(grey, "PNG"))
    expected["latin1-\\xe9t\\xe9.png"] = "digit"
    put("new\nline.png", encode(grey, "PNG"), "digit")
    expected["new\\nline.png"] = expected.pop("new\nline.png")
    return expected


def test_hostile_corpus_each_gets_its_own_result(redis_url: str, default_version: str,
                                                  start_workers: StartWorkers, mnist_test: Digits,
                                                  tmp_path: Path) -> None:
    images, labels = mnist_test
    folder, outside = tmp_path / "corpus", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    expected = build_corpus(folder, outside, images[0])
    assert len(expected) >= 19
    pool = start_workers(2)
    command = [*WITHOUT_ROOTS_READ_ALL, sys.executable, "-m", "producer", "run", str(folder),
               "--redis-url", redis_url, "--batch-size", "8"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 1, done.stderr  # some images failed, and the exit code says so
    results = [json.loads(line) for line in done.stdout.splitlines()]
    by_path = {r["path"]: r for r in results}
    assert len(results) == len(by_path) == len(expected), sorted(by_path)
    rows = []
    for name, outcome in sorted(expected.items()):
        result = by_path[name]
        if outcome == "digit":
            assert result["error"] is None and result["digits"] == str(labels[0]), (name, result)
            rows.append(f"| `{name}` | classified: {result['digits']} ({result['confidences'][0]:.3f}) |")
        else:
            assert result["digits"] is None and outcome in result["error"], (name, result)
            assert result["error"].startswith(f"{name}: "), result["error"]
            rows.append(f"| `{name}` | {result['error']} |")
    assert pool.process.poll() is None, "the worker pool died"
    print("\n".join(["| input | result |", "| --- | --- |", *rows]))


@pytest.mark.parametrize("command", ["run", "enqueue"])
def test_empty_folder_says_so(redis_url: str, default_version: str, start_workers: StartWorkers,
                              tmp_path: Path, command: str) -> None:
    start_workers(1)
    done = subprocess.run([sys.executable, "-m", "producer", command, str(tmp_path), "--redis-url", redis_url],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0
    assert f"no images found under {tmp_path}" in " ".join(done.stderr.split())
