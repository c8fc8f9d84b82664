"""A batch payload's paths, checked before anyone trusts them (digits/payload.py)."""

from __future__ import annotations

import json

import pytest

from digits.defaults import MAX_BATCH_PATHS, MAX_PATH_CHARS
from digits.payload import PayloadError, batch_images, batch_options, batch_paths

CORRUPT = [
    (None, "is missing"),
    (b"{not json", "is not JSON"),
    (b"\xff\xfe", "is not JSON"),
    (b'{"a": 1}', "is not a list of path strings"),
    (b"[1, 2, 3, 4]", "is not a list of path strings"),
    (b'["a.png", null]', "is not a list of path strings"),
    (b'["a.png", ""]', "is not a list of path strings"),
    (b'["a.png", "a.png"]', "names a path twice"),
    (json.dumps([f"{n}.png" for n in range(MAX_BATCH_PATHS + 1)]).encode(), f"over the limit of {MAX_BATCH_PATHS}"),
    (json.dumps(["x" * (MAX_PATH_CHARS + 1)]).encode(), f"over the limit of {MAX_PATH_CHARS}"),
]


@pytest.mark.parametrize(("raw", "message"), CORRUPT)
def test_corrupt_paths_are_refused_naming_run_batch_and_why(raw: bytes | None, message: str) -> None:
    with pytest.raises(PayloadError, match=rf"^run r1 batch 7: payload field 'paths' .*{message}"):
        batch_paths(raw, "r1", 7)


def test_good_paths_and_options_pass() -> None:
    assert batch_paths(b'["a.png", "sub/b\\\\n.png"]', "r1", 0) == ["a.png", "sub/b\\n.png"]
    assert batch_options(None, "r1", 0) == {} and batch_options(b'{"expect": "5"}', "r1", 0) == {"expect": "5"}
    for raw in (b"[]", b"not json"):
        with pytest.raises(PayloadError, match="run r1 batch 0: payload field 'options'"):
            batch_options(raw, "r1", 0)


SIZES_CORRUPT = [
    (None, "is missing"),
    (b"[1, 2", "is not JSON"),
    (b'{"a": 1}', "is not a list of byte counts"),
    (b"[1, -1, 2]", "is not a list of byte counts"),
    (b'[1, "2", 3]', "is not a list of byte counts"),
    (b"[1, 2]", "holds 2 sizes for 3 paths"),
    (b"[1, 2, 4]", r"adds up to 7 bytes, but 'images' holds 6"),
]


@pytest.mark.parametrize(("raw", "message"), SIZES_CORRUPT)
def test_corrupt_sizes_are_refused_naming_run_batch_and_why(raw: bytes | None, message: str) -> None:
    with pytest.raises(PayloadError, match=rf"^run r1 batch 7: payload field 'sizes' {message}"):
        batch_images(b"abcdef", raw, 3, "r1", 7)


def test_images_are_cut_by_their_sizes_and_a_payload_without_images_has_none() -> None:
    assert batch_images(b"abcdef", b"[1, 0, 5]", 3, "r1", 7) == [b"a", b"", b"bcdef"]
    assert batch_images(None, None, 3, "r1", 7) is None
