"""The browser demo (docs/demo/) in headless Chromium: its numbers against the Python worker's.

The page is served from the repository root by a private http.server, as docs/demo.md says, and
driven through Debian's chromium and chromium-driver (scripts/install-chromium.sh installs them).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions import interaction
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.actions.pointer_input import PointerInput
from selenium.webdriver.common.by import By

from digits.arrays import Floats
from digits.images import ImageError, normalise
from digits.network import load_model
from digits.registry import DEFAULT_MODEL_DIR
from digits.theta import Model, ThetaError, load_dir, pack, parse_pair, to_csv
from tests.conftest import ROOT, Digits, cnn_manifest, random_cnn

PAGE = "/docs/demo/"
SCREENSHOT = ROOT / "docs" / "demo" / "screenshot.png"  # the committed one: refresh with UPDATE_SCREENSHOT=1
PAD = 280
TOLERANCE = 1e-4

pytestmark = pytest.mark.timeout(180)



@dataclass(frozen=True)
class Site:
    url: str  # http://127.0.0.1:PORT
    extra: Path  # served under /_test/


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The repository root over HTTP, as `python -m http.server -d .` serves it, plus /_test/ for test files."""
    extra = tmp_path_factory.mktemp("served")

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(ROOT), **kwargs)

        def translate_path(self, path: str) -> str:
            url_path = urllib.parse.unquote(urllib.parse.urlsplit(path).path)
            if url_path.startswith("/_test/"):
                return str(extra.joinpath(*(part for part in Path(url_path).parts[2:] if part != "..")))
            return super().translate_path(path)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Site(f"http://127.0.0.1:{server.server_address[1]}", extra)
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def default_model() -> Model:
    return Model(load_dir(DEFAULT_MODEL_DIR))


def open_page(driver: WebDriver, url: str) -> dict[str, Any]:
    """Load the page and wait for its model: the model's info, or {"error": message}."""
    driver.get(url)
    info = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.modelReady.then(done, (error) => done({error: String(error.message || error)}));"
    )
    assert isinstance(info, dict), info
    return info


def page_probabilities(driver: WebDriver, inputs: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all(arguments[0].map((x) => window.classifyPixels(x)))"
        "  .then(done, (error) => done(String(error.message || error)));",
        np.asarray(inputs, dtype=np.float64).reshape(-1, 784).tolist(),
    )
    assert isinstance(result, list), result
    return np.array(result, dtype=np.float64)


def fixed_inputs(mnist_test: Digits) -> Floats:
    """20 MNIST test digits, plus all-dark, saturated, mid-grey and random-noise fields."""
    images = mnist_test[0][:20].astype(np.float32) / 255.0
    noise = np.random.default_rng(7).random((1, 784), dtype=np.float32)
    edges = np.vstack([np.zeros(784), np.ones(784), np.full(784, 0.5), noise[0]]).astype(np.float32)
    return np.vstack([images, edges])


def page_canvas_grey(driver: WebDriver) -> Floats:
    grey = driver.execute_script("return window.canvasGrey();")
    return np.array(grey, dtype=np.float32).reshape(PAD, PAD)


def off_centre_canvas(digit: npt.NDArray[np.uint8], size: int, top: int, left: int, paper: bool) -> Floats:
    """A 28 x 28 MNIST digit upscaled to size x size, placed off-centre on a 280 x 280 pad."""
    big = np.asarray(Image.fromarray(digit.reshape(28, 28)).resize((size, size), Image.Resampling.BICUBIC))
    canvas = np.zeros((PAD, PAD), dtype=np.uint8)
    canvas[top:top + size, left:left + size] = big
    if paper:  # dark ink on white, like the page's own pad
        canvas = 255 - canvas
    return canvas.astype(np.float32) / 255.0


def test_page_shows_the_default_model(driver: WebDriver, site: Site) -> None:
    info = open_page(driver, site.url + PAGE)
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    assert info["version"] == manifest["version"]
    assert info["hidden"] == manifest["hidden"] == 1024
    assert "sha256 of both files match the manifest" in info["check"]
    assert driver.find_element(By.ID, "model-version").text == manifest["version"]
    assert driver.find_element(By.ID, "model-architecture").text == "dense1024-dense10"
    log: list[dict[str, Any]] = driver.get_log("browser")
    errors = [entry for entry in log if entry.get("level") == "SEVERE"]
    assert not errors, errors


def test_page_probabilities_match_python(driver: WebDriver, site: Site, mnist_test: Digits,
                                         default_model: Model) -> None:
    inputs = fixed_inputs(mnist_test)
    assert "error" not in open_page(driver, site.url + PAGE)
    expected = default_model.probabilities(inputs).astype(np.float64)
    found = page_probabilities(driver, inputs)
    assert found.shape == (len(inputs), 10)
    difference = float(np.abs(found - expected).max())
    print(f"max |page - python| probability difference over {len(inputs)} inputs: {difference:.3g}")
    assert difference <= TOLERANCE
    assert (found[:20].argmax(axis=1) == mnist_test[1][:20]).mean() >= 0.95


def test_page_normalisation_matches_python(driver: WebDriver, site: Site, mnist_test: Digits,
                                           default_model: Model) -> None:
    assert "error" not in open_page(driver, site.url + PAGE)
    placements = [(0, 200, 70, 10, True), (1, 240, 5, 30, True), (2, 120, 150, 150, True),
                  (3, 90, 20, 170, False), (4, 260, 10, 12, False), (7, 160, 110, 0, True)]
    mean_differences, max_differences = [], []
    for index, size, top, left, paper in placements:
        canvas = off_centre_canvas(mnist_test[0][index], size, top, left, paper)
        page_field = driver.execute_script("return window.setCanvasGrey(arguments[0], 280, 280);",
                                           canvas.reshape(-1).tolist())
        grey = page_canvas_grey(driver)
        assert np.array_equal(grey, canvas), "the pad should hold exactly the injected pixels"
        found = np.array(page_field, dtype=np.float32).reshape(28, 28)
        expected = normalise(grey)
        mean_differences.append(float(np.abs(found - expected).mean()))
        max_differences.append(float(np.abs(found - expected).max()))
        classes = default_model.probabilities(np.stack([found, expected])).argmax(axis=1)
        assert classes[0] == classes[1] == mnist_test[1][index], (index, classes)
    print(f"normalisation |page - python|: mean {max(mean_differences):.3g}, max {max(max_differences):.3g}")
    # The page mirrors Pillow's Lanczos resampling, so only float32 rounding should differ.
    assert max(mean_differences) < 1e-4
    assert max(max_differences) < 1e-3

    blank = np.ones((PAD, PAD), dtype=np.float32)
    assert driver.execute_script("return window.setCanvasGrey(arguments[0], 280, 280);", blank.reshape(-1).tolist()) \
        is None
    with pytest.raises(ImageError, match="blank"):
        normalise(blank)


def draw_seven(driver: WebDriver) -> None:
    """Draw a 7 on the pad with the mouse: a top bar, then the diagonal."""
    pad = driver.find_element(By.ID, "pad")
    driver.find_element(By.ID, "clear").click()
    actions = ActionChains(driver, duration=10)
    actions.move_to_element_with_offset(pad, -70, -85).click_and_hold()
    for _ in range(7):
        actions.move_by_offset(20, 0)
    for _ in range(9):
        actions.move_by_offset(-9, 20)
    actions.release().perform()


def test_touch_draws_too(driver: WebDriver, site: Site) -> None:
    assert "error" not in open_page(driver, site.url + PAGE)
    pad = driver.find_element(By.ID, "pad")
    finger = ActionBuilder(driver, mouse=PointerInput(interaction.POINTER_TOUCH, "finger"), duration=10)
    finger.pointer_action.move_to(pad, 5, -95).pointer_down()
    for _ in range(9):
        finger.pointer_action.move_by(-2, 20)
    finger.pointer_action.pointer_up()
    finger.perform()
    assert driver.find_element(By.ID, "prediction").text.startswith("1")
    driver.find_element(By.ID, "clear").click()
    assert driver.find_element(By.ID, "prediction").text == "draw a digit"


def test_drawing_classifies_like_python_and_screenshot(driver: WebDriver, site: Site, default_model: Model,
                                                      tmp_path: Path) -> None:
    assert "error" not in open_page(driver, site.url + PAGE)
    draw_seven(driver)
    shown = driver.find_element(By.ID, "chart").get_attribute("data-probabilities")
    assert shown, "the chart shows no probabilities after drawing"
    found = np.array(json.loads(shown), dtype=np.float64)
    grey = page_canvas_grey(driver)
    assert grey.min() < 0.1, "the mouse strokes did not reach the pad"
    expected = default_model.probabilities(normalise(grey)).astype(np.float64)[0]
    difference = float(np.abs(found - expected).max())
    print(f"drawn 7: page {found.argmax()} ({found.max():.4f}), python {expected.argmax()}; max diff {difference:.3g}")
    assert found.argmax() == expected.argmax() == 7
    assert difference <= TOLERANCE
    assert driver.find_element(By.ID, "prediction").text.startswith("7")
    screenshot = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") == "1" else tmp_path / "screenshot.png"
    driver.find_element(By.TAG_NAME, "main").screenshot(str(screenshot))
    print(f"screenshot: {screenshot}")
    with Image.open(screenshot) as image:
        assert image.width >= 600 and image.height >= 400


def write_small_model(directory: Path, hidden: int, gz: bool) -> Model:
    rng = np.random.default_rng(hidden)
    theta = pack(rng.normal(0, 1, hidden), rng.normal(0, 0.3, (784, hidden)),
                 rng.normal(0, 1, 10), rng.normal(0, 1, (hidden, 10)))
    for name, matrix in (("theta1.csv", theta.theta1), ("theta2.csv", theta.theta2)):
        data = to_csv(matrix)
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return Model(theta)


def test_other_versions_by_url_and_file_picker(driver: WebDriver, site: Site, mnist_test: Digits) -> None:
    inputs = fixed_inputs(mnist_test)
    by_url = write_small_model(site.extra, 16, gz=False)
    info = open_page(driver, f"{site.url}{PAGE}?theta1=/_test/theta1.csv&theta2=/_test/theta2.csv")
    assert info["hidden"] == 16 and "no manifest" in info["version"], info
    assert driver.find_element(By.ID, "model-architecture").text == "dense16-dense10"
    assert float(np.abs(page_probabilities(driver, inputs) - by_url.probabilities(inputs)).max()) <= TOLERANCE

    picked_dir = site.extra / "picked"
    picked_dir.mkdir()
    picked = write_small_model(picked_dir, 24, gz=True)
    manifest = {"version": "picked-24", "hidden": 24}
    (picked_dir / "manifest.json").write_text(json.dumps(manifest))
    open_page(driver, site.url + PAGE)
    driver.execute_script("document.querySelector('details').open = true;")
    driver.find_element(By.ID, "file-manifest").send_keys(str(picked_dir / "manifest.json"))
    driver.find_element(By.ID, "file-theta1").send_keys(str(picked_dir / "theta1.csv.gz"))
    driver.find_element(By.ID, "file-theta2").send_keys(str(picked_dir / "theta2.csv.gz"))
    info = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const poll = () => { const info = window.modelInfo();"
        "  if (info && info.hidden === 24) done(info); else setTimeout(poll, 50); };"
        "poll();"
    )
    assert info["version"] == "picked-24", info
    assert float(np.abs(page_probabilities(driver, inputs) - picked.probabilities(inputs)).max()) <= TOLERANCE


def test_a_cnn_version_reads_as_python_reads_it(driver: WebDriver, site: Site, mnist_test: Digits) -> None:
    """An N-layer version by `?manifest=URL` (layer files beside it, one gzipped) and by the file
    pickers: the page's probabilities equal the workers' NumPy ones within 1e-5."""
    inputs = fixed_inputs(mnist_test)
    folder = site.extra / "cnn"
    folder.mkdir()
    files = random_cnn(seed=9, dense=12)
    manifest = cnn_manifest(files, "cnn-9")
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "layer3.csv.gz").write_bytes(gzip.compress(files["layer3.csv"]))
    (folder / "layer3.csv").unlink()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    python = load_model(files, manifest, "cnn-9").probabilities(inputs)

    info = open_page(driver, f"{site.url}{PAGE}?manifest=/_test/cnn/manifest.json")
    assert info["architecture"] == "conv3x16-pool2-conv3x32-pool2-dense12-dense10", info
    assert info["version"] == "cnn-9" and "sha256 of all 4 layer files match the manifest" in info["check"], info
    assert driver.find_element(By.ID, "model-architecture").text == info["architecture"]
    assert float(np.abs(page_probabilities(driver, inputs) - python).max()) <= 1e-5

    open_page(driver, site.url + PAGE)
    driver.execute_script("document.querySelector('details').open = true;")
    driver.find_element(By.ID, "file-manifest").send_keys(str(folder / "manifest.json"))
    driver.find_element(By.ID, "file-layers").send_keys("\n".join(
        str(folder / name) for name in ("layer1.csv", "layer2.csv", "layer3.csv.gz", "layer4.csv")))
    info = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const poll = () => { const info = window.modelInfo();"
        "  if (info && info.version === 'cnn-9') done(info); else setTimeout(poll, 50); };"
        "poll();"
    )
    assert info["architecture"].startswith("conv3x16"), info
    assert float(np.abs(page_probabilities(driver, inputs) - python).max()) <= 1e-5

    # A new folder, not a file rewritten in place: the browser may serve the good layer2.csv from its cache.
    broken = site.extra / "cnn-bad"
    shutil.copytree(folder, broken)
    (broken / "layer2.csv").write_bytes(to_csv(np.ones((100, 32))))
    (broken / "manifest.json").write_text(json.dumps(dict(manifest, version="cnn-bad")))
    info = open_page(driver, f"{site.url}{PAGE}?manifest=/_test/cnn-bad/manifest.json")
    assert info == {"error": "cnn-bad/layer2.csv, layer 3 (conv): 100 rows, but a 3x3 convolution of 16 "
                             "channel(s) needs 144 weight rows under the bias row (145)"}, info


def test_a_broken_pair_is_refused_with_pythons_message(driver: WebDriver, site: Site) -> None:
    theta1 = np.zeros((785, 16))
    theta2 = np.zeros((16, 10))
    (site.extra / "bad1.csv").write_bytes(to_csv(theta1))
    (site.extra / "bad2.csv").write_bytes(to_csv(theta2))
    with pytest.raises(ThetaError) as refused:
        parse_pair(to_csv(theta1), to_csv(theta2), "bad1.csv", "bad2.csv")
    info = open_page(driver, f"{site.url}{PAGE}?theta1=/_test/bad1.csv&theta2=/_test/bad2.csv")
    assert info == {"error": str(refused.value)}
    assert str(refused.value) in driver.find_element(By.ID, "status").text
