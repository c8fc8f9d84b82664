"""The keying station (`digits-producer review`): its page in real Chromium, its app as a real
process over HTTP, and the files it will and will not serve."""

from __future__ import annotations

import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from PIL import Image
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.wait import WebDriverWait

from digits import keys
from digits.connection import text
from producer import keying
from producer.review import Station, create_app
from tests.conftest import ROOT, FlaggedRun, stored_run

SCREENSHOT = ROOT / "docs" / "keying-station.png"  # the committed one: refresh with UPDATE_SCREENSHOT=1

pytestmark = pytest.mark.timeout(300)


class StationProcess:
    """`digits-producer review RUN --port 0` as a real process, and its URL."""

    def __init__(self, redis_url: str, run_id: str, name: str, *extra: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "producer", "review", run_id, "--redis-url", redis_url, "--port", "0",
             "--station", name, *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        assert ready, "the station did not print its URL"
        self.url = self.process.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.url + self.process.stderr.read()  # type: ignore[union-attr]

    def post(self, route: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(self.url + route, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self) -> str:
        """SIGTERM, as Ctrl-C or a service manager stops it; what it said on stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _out, err = self.process.communicate(timeout=30)
        assert self.process.returncode == 0, err
        return err


@pytest.fixture
def start_station(redis_url: str) -> Iterator[Callable[..., StationProcess]]:
    started: list[StationProcess] = []

    def start(run_id: str, name: str, *extra: str) -> StationProcess:
        started.append(StationProcess(redis_url, run_id, name, *extra))
        return started[-1]

    yield start
    for station in started:
        if station.process.poll() is None:
            station.process.kill()
            station.process.communicate(timeout=30)


def page_path(driver: WebDriver) -> str:
    return driver.find_element(By.ID, "work").get_attribute("data-path") or ""


def next_image(driver: WebDriver, before: str) -> str:
    """Wait for the page to show an image other than `before`; its path."""
    WebDriverWait(driver, 30).until(lambda d: page_path(d) not in ("", before))
    return page_path(driver)


def check_reading_shown(driver: WebDriver, result: dict[str, Any]) -> None:
    """Each of the machine's digits has its box on the crop and its digit and probability under it."""
    assert driver.find_element(By.ID, "code").get_attribute("value") == result["code"]
    assert len(driver.find_elements(By.CSS_SELECTOR, "#boxes rect")) == len(result["boxes"])
    shown = [cell.text.split() for cell in driver.find_elements(By.CSS_SELECTOR, "#readout .digit")]
    assert shown == [[digit, f"{p:.3f}"] for digit, p in zip(result["digits"], result["confidences"], strict=True)]
    first = driver.find_element(By.CSS_SELECTOR, "#boxes rect")
    assert [int(float(first.get_attribute(k) or 0)) for k in ("x", "y")] == result["boxes"][0][:2]


def test_twenty_codes_keyed_through_the_page(driver: WebDriver, flagged_run: FlaggedRun, connection: redis.Redis,
                                            start_station: Callable[..., StationProcess], tmp_path: Path) -> None:
    """Accept with Enter, retype one digit in place, mark one unreadable with *; the page moves on
    at once, and Redis holds each keyed code beside the untouched machine result."""
    run_id = flagged_run.run_id
    machine = connection.hgetall(keys.run_results(run_id))  # the flagged, by path, as a station reads them
    results = {text(path): json.loads(raw) for path, raw in machine.items()}
    station = start_station(run_id, "alpha")
    started = time.time()
    driver.get(station.url)
    assert "*" in driver.find_element(By.ID, "keys-help").text  # the page says which key marks unreadable
    expected: dict[str, str | None] = {}
    path = ""
    for index in range(20):
        path = next_image(driver, path)
        result = results[path]
        check_reading_shown(driver, result)
        field = driver.find_element(By.ID, "code")
        if index == 3:  # the third digit is wrong: two steps right, retype it
            digit = str((int(result["code"][2]) + 1) % 10)
            field.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, digit, Keys.ENTER)
            expected[path] = result["code"][:2] + digit + result["code"][3:]
        elif index == 7:
            field.send_keys("*")
            expected[path] = None
        else:
            field.send_keys(Keys.ENTER)
            expected[path] = result["code"]
    assert list(expected) == flagged_run.flagged[:20]  # served in path order, each once
    shown_next = next_image(driver, path)
    driver.execute_async_script("window.keyingSettled().then(arguments[arguments.length - 1]);")

    keyed = keying.keyed_codes(connection, run_id)
    assert {p: record["code"] for p, record in keyed.items()} == expected
    assert [p for p, record in keyed.items() if record["unreadable"]] == [flagged_run.flagged[7]]
    assert {record["station"] for record in keyed.values()} == {"alpha"}
    assert all(started <= record["keyed_at"] <= time.time() for record in keyed.values())
    assert connection.hgetall(keys.run_results(run_id)) == machine  # the machine's results untouched
    assert connection.hget(keys.run_claims(run_id), shown_next) == b"alpha"  # the image on screen is held
    left = len(flagged_run.flagged) - 20
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "left").text == str(left))
    assert driver.find_element(By.ID, "keyed-here").text == "20"
    assert float(driver.find_element(By.ID, "rate").text) > 0
    assert not [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
    screenshot = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") == "1" else tmp_path / "station.png"
    driver.find_element(By.TAG_NAME, "main").screenshot(str(screenshot))
    driver.get("about:blank")  # the page closes: the images it held (on screen, loaded ahead) go back at once
    WebDriverWait(driver, 10).until(lambda d: connection.hlen(keys.run_claims(run_id)) == 0)
    assert keying.claim_next(connection, run_id, "beta").path == shown_next
    assert "station alpha stopped" in station.stop()


def test_two_stations_share_a_run_without_keying_an_image_twice(connection: redis.Redis, tmp_path: Path,
                                                               start_station: Callable[..., StationProcess]) -> None:
    run = stored_run(connection, tmp_path / "run", 40)
    stations = [start_station(run.run_id, name) for name in ("alpha", "beta")]
    keyed: dict[str, list[str]] = {"alpha": [], "beta": []}
    problems: list[Any] = []

    def work(station: StationProcess, name: str) -> None:
        while True:
            status, claim = station.post("api/next", {})
            if claim["path"] is None:
                if claim["progress"]["left"] == 0:
                    return
                time.sleep(0.1)  # the last ones are on the other station's screen
                continue
            status, answer = station.post("api/key", {"path": claim["path"], "code": "54321"})
            if status != 200:
                problems.append(answer)
            keyed[name].append(claim["path"])

    threads = [threading.Thread(target=work, args=(s, n)) for s, n in zip(stations, keyed, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert problems == []
    assert sorted(keyed["alpha"] + keyed["beta"]) == run.flagged
    assert keyed["alpha"] and keyed["beta"]
    stored = keying.keyed_codes(connection, run.run_id)
    assert {path: record["station"] for path, record in stored.items()} == \
        {path: name for name, paths in keyed.items() for path in paths}


def test_a_killed_station_gives_its_images_back_after_the_claim(connection: redis.Redis, tmp_path: Path,
                                                                start_station: Callable[..., StationProcess]) -> None:
    """A station killed with an image on screen and the next one loaded (SIGKILL: nothing released)."""
    run = stored_run(connection, tmp_path / "run", 3)
    crashed = start_station(run.run_id, "alpha", "--claim-seconds", "2")
    held = [crashed.post("api/next", {})[1]["path"] for _ in range(2)]
    status, answer = crashed.post("api/key", {"path": held[0], "code": "12345"})
    assert status == 200 and answer["progress"]["left"] == 2
    crashed.process.kill()
    crashed.process.communicate(timeout=30)
    other = start_station(run.run_id, "beta")
    assert other.post("api/next", {})[1]["path"] == "scan-002.png"
    assert other.post("api/next", {})[1]["path"] is None  # scan-001 is still alpha's
    time.sleep(2.2)
    assert other.post("api/next", {})[1]["path"] == "scan-001.png"
    assert keying.keyed_codes(connection, run.run_id)["scan-000.png"]["station"] == "alpha"  # kept


def test_only_flagged_images_inside_the_run_folder_are_served(connection: redis.Redis, tmp_path: Path) -> None:
    run = stored_run(connection, tmp_path / "run", 2, flagged_every=2)  # scan-000 flagged, scan-001 not
    outside = tmp_path / "secret.png"
    Image.new("L", (8, 8), 0).save(outside)
    (run.folder / "link.png").symlink_to(outside)
    Image.new("L", (30, 20), 128).save(run.folder / "scan.tif")
    connection.sadd(keys.run_review(run.run_id), "../secret.png", str(outside), "link.png", "scan.tif", "gone.png")
    client = create_app(Station(connection, run.run_id, run.folder, "alpha")).test_client()

    def image(path: str) -> tuple[int, bytes]:
        response = client.get("/api/image?path=" + urllib.parse.quote(path))
        return response.status_code, response.data

    status, data = image("scan-000.png")
    assert status == 200 and Image.open(io.BytesIO(data)).size == (60, 20)
    status, data = image("scan.tif")  # a TIFF scan comes as PNG, which every browser shows
    assert status == 200 and Image.open(io.BytesIO(data)).format == "PNG"
    assert image("scan-001.png")[0] == 404  # not flagged
    assert image("gone.png")[0] == 404
    for path, reason in (("../secret.png", "climbs out"), (str(outside), "not a path relative"),
                         ("link.png", "leads outside")):
        status, data = image(path)
        assert status == 403 and reason in json.loads(data)["error"], (path, data)
    assert client.post("/api/next", data="{}", content_type="text/plain").status_code == 415  # no cross-site forms


def test_the_command_refuses_an_unknown_run_and_a_taken_port(redis_url: str, connection: redis.Redis,
                                                             tmp_path: Path) -> None:
    def review(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "producer", "review", *args, "--redis-url", redis_url],
                              cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)

    missing = review("no-such-run")
    assert missing.returncode == 1 and "no such run: no-such-run" in missing.stderr
    run = stored_run(connection, tmp_path / "run", 1)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        taken = review(run.run_id, "--port", str(port))
    assert taken.returncode == 1 and f"cannot serve on 127.0.0.1:{port}" in taken.stderr
