"""`digits-producer review RUN`: the keying station, a web page that shows one run's flagged codes.

The page (producer/station/: plain HTML, JavaScript and CSS) asks this app for the next flagged
image, shows the crop with the machine's reading, and posts what the operator keyed. Redis holds
every bit of state (producer/keying.py), so the app can be stopped at any time and any number
of stations can key one run. Images are only ever read from the run's folder, and only those of
its review set. State-changing requests must be JSON, which a page of another origin cannot send
without a CORS preflight this app never grants.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis
from flask import Flask, Response, abort, jsonify, request, send_from_directory
from PIL import Image
from waitress.server import create_server
from werkzeug.exceptions import HTTPException

from digits import defaults, keys
from digits.files import UnsafePath, read_inside
from digits.images import ImageError, decode
from digits.results import decode_result
from producer import keying

PAGE = Path(__file__).resolve().parent / "station"
MAX_REQUEST_BYTES = 64 * 1024  # a key, a renewal or a release: a few paths at most
UNREADABLE_KEY = "*"  # on the numeric keypad with the digits and Enter; told to the page, which says so


@dataclass(frozen=True)
class Station:
    """What one station serves: a run, from its folder, under a name stored with each keyed code."""

    connection: redis.Redis
    run_id: str
    root: Path
    name: str
    claim_seconds: float = defaults.CLAIM_SECONDS
    max_bytes: int = defaults.MAX_BYTES
    max_pixels: int = defaults.MAX_PIXELS


def json_body() -> dict[str, Any]:
    """The request's JSON object; 415 for anything that is not JSON (a cross-site form post)."""
    if not request.is_json:
        abort(415, "send JSON (Content-Type: application/json)")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "the body must be a JSON object")
    return body


def paths_of(body: dict[str, Any]) -> list[str]:
    paths = body.get("paths")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        abort(400, "'paths' must be a list of image paths")
    return paths


def png_of(station: Station, path: str) -> bytes:
    """The crop as the workers saw it (first frame, EXIF orientation applied, in grey), as PNG, so
    the boxes fit and a TIFF or PGM scan shows in any browser."""
    if not station.connection.sismember(keys.run_review(station.run_id), path):
        abort(404, f"{path} is not a flagged image of run {station.run_id}")
    try:
        data, problem = read_inside(station.root, path, station.max_bytes)
    except UnsafePath as exc:
        abort(403, str(exc))
    if data is None:
        abort(404, problem)
    try:
        grey = decode(data, station.max_pixels)
    except ImageError as exc:
        abort(422, f"{path}: {exc}")
    out = io.BytesIO()
    Image.fromarray(np.round(grey * 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def claimed(station: Station) -> dict[str, Any]:
    """The next image for this station and its machine reading, or none for now; with the progress."""
    claim = keying.claim_next(station.connection, station.run_id, station.name, station.claim_seconds)
    result = None
    if claim.path is not None:
        raw = station.connection.hget(keys.run_results(station.run_id), claim.path)
        result = decode_result(raw) if raw is not None else None
    return {"path": claim.path, "result": result, "progress": keying.progress(station.connection, station.run_id)}


def keyed(station: Station, body: dict[str, Any]) -> tuple[Response, int]:
    """Store {path, code} or {path, unreadable: true}: 400 for a bad code, 409 if refused (keyed
    already, or on another station's screen)."""
    path, code = body.get("path"), body.get("code")
    if not isinstance(path, str) or not (body.get("unreadable") is True or isinstance(code, str)):
        abort(400, "send {path, code} or {path, unreadable: true}")
    try:
        typed = None if body.get("unreadable") is True else keying.parse_code(str(code))[0]
    except keying.KeyingError as exc:
        return jsonify({"error": str(exc)}), 400
    try:
        record = keying.submit(station.connection, station.run_id, station.name, path, typed)
    except keying.KeyingError as exc:
        return jsonify({"error": str(exc)}), 409
    return jsonify({"keyed": record, "progress": keying.progress(station.connection, station.run_id)}), 200


def create_app(station: Station) -> Flask:
    """The station's web app: the page, and its small JSON API under /api/."""
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES

    @app.get("/")
    def page() -> Response:
        return send_from_directory(PAGE, "index.html")

    @app.get("/static/<name>")
    def asset(name: str) -> Response:
        return send_from_directory(PAGE, name)

    @app.get("/api/state")
    def state() -> Response:
        return jsonify({"run": station.run_id, "station": station.name, "claim_seconds": station.claim_seconds,
                        "unreadable_key": UNREADABLE_KEY,
                        "progress": keying.progress(station.connection, station.run_id)})

    @app.post("/api/next")
    def next_image() -> Response:
        json_body()
        return jsonify(claimed(station))

    @app.get("/api/image")
    def image() -> Response:
        response = Response(png_of(station, request.args.get("path", "")), mimetype="image/png")
        response.headers["Cache-Control"] = "private, max-age=3600"
        return response

    @app.post("/api/key")
    def key() -> tuple[Response, int]:
        return keyed(station, json_body())

    @app.post("/api/renew")
    def renew() -> Response:
        held = keying.renew(station.connection, station.run_id, station.name, paths_of(json_body()),
                            station.claim_seconds)
        return jsonify({"held": held})

    @app.post("/api/release")
    def release() -> Response:
        keying.release(station.connection, station.run_id, station.name, paths_of(json_body()))
        return jsonify({"released": True})

    @app.errorhandler(keying.KeyingError)
    def gone(exc: keying.KeyingError) -> tuple[Response, int]:
        return jsonify({"error": str(exc)}), 410

    @app.errorhandler(HTTPException)
    def refused(exc: HTTPException) -> tuple[Response, int]:
        return jsonify({"error": exc.description}), exc.code or 500

    return app


def serve(station: Station, host: str, port: int, announce: Callable[[str], None]) -> None:
    """Serve the station until Ctrl-C or SIGTERM (a KeyboardInterrupt); announce its URL first
    (port 0 picks a free one)."""
    server = create_server(create_app(station), host=host, port=port, threads=4, ident="digits-review")
    shown = f"[{host}]" if ":" in host else host
    announce(f"http://{shown}:{server.effective_port}/")  # type: ignore[union-attr]
    sys.stdout.flush()
    server.run()  # returns on KeyboardInterrupt, after closing the server
