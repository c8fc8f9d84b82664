"""Finding the images of a folder: recursive, filtered, and never outside the folder."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from digits.images import DEFAULT_MAX_BYTES, EXTENSIONS


@dataclass(frozen=True)
class Found:
    """One file to classify: its path relative to the folder, and why it cannot be read, if so."""

    relative: str
    path: Path
    problem: str | None = None


def display_name(raw: str) -> str:
    """A printable, JSON-safe name: undecodable bytes and control characters are escaped."""
    name = raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in name)


def walk(root: Path, extensions: tuple[str, ...] = EXTENSIONS,
         globs: tuple[str, ...] = ()) -> Iterator[Found]:
    """Yield the matching files under root in a stable order, lazily, so memory stays flat.

    Symbolic links are never followed out of root: a link that points outside, or nowhere,
    is yielded with a problem so that it gets its own failed result instead of vanishing.
    """
    root = root.resolve()
    wanted = tuple(e.lower() for e in extensions)
    for directory, subdirs, names in os.walk(root):
        subdirs.sort()
        for name in sorted(names):
            path = Path(directory) / name
            relative = display_name(str(path.relative_to(root)))
            if wanted and not name.lower().endswith(wanted):
                continue
            if globs and not any(fnmatch.fnmatch(relative, g) for g in globs):
                continue
            yield Found(relative, path, link_problem(path, root))


def link_problem(path: Path, root: Path) -> str | None:
    if not path.is_symlink():
        return None
    target = path.resolve()
    if not target.exists():
        return "broken symbolic link"
    if not target.is_relative_to(root):
        return "symbolic link points outside the enqueued folder; not followed"
    return None


def read(found: Found, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[bytes | None, str | None]:
    """The file's bytes, or None and the reason it cannot be sent."""
    if found.problem:
        return None, found.problem
    try:
        size = found.path.stat().st_size
        if size > max_bytes:
            return None, f"file is {size} bytes, over the size limit of {max_bytes}"
        return found.path.read_bytes(), None
    except OSError as exc:
        return None, f"cannot read file: {exc.strerror or exc}"
