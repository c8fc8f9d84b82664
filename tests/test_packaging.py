"""The package as pip builds it: the bundled model and samples inside, and no warnings on the way."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT


def test_the_wheel_holds_the_model_and_samples_and_builds_without_warnings(tmp_path: Path) -> None:
    """The data folders were not packages, and setuptools warned about each of their files (about
    90 lines on a first `./demo.sh`)."""
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "absent from the `packages` configuration" not in done.stdout + done.stderr
    [wheel] = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"digits/default_model/manifest.json", "producer/samples/mnist-00-label7.png",
            "producer/station/index.html", "producer/station/station.js", "producer/station/station.css"} <= set(names)
    assert sum(name.startswith("producer/samples/") for name in names) == 24
