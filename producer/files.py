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
    path: str
    problem: str | None = None


def display_name(raw: str) -> str:
    """A printable, JSON-safe name: undecodable bytes and control characters are escaped."""
    if raw.isprintable() and raw.isascii():
        return raw
    name = raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in name)


def walk(root: Path, extensions: tuple[str, ...] = EXTENSIONS,
         globs: tuple[str, ...] = (), skip_dirs: tuple[str, ...] = ()) -> Iterator[Found]:
    """Yield the matching files under root in a stable order, lazily, so memory stays flat.

    Files come before subfolders, both sorted by name. Symbolic links are never followed out
    of root: a link that points outside, or nowhere, is yielded with a problem so that it gets
    its own failed result instead of vanishing. Linked folders are not descended into, nor
    folders named in skip_dirs.
    """
    real_root = os.path.realpath(root)
    wanted = tuple(e.lower() for e in extensions)
    pending = [(real_root, "")]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as scan:
            entries = sorted(scan, key=lambda e: e.name)
        subdirs = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in skip_dirs:
                    subdirs.append((entry.path, f"{prefix}{entry.name}/"))
                continue
            if wanted and not entry.name.lower().endswith(wanted):
                continue
            relative = display_name(prefix + entry.name)
            if globs and not any(fnmatch.fnmatch(relative, g) for g in globs):
                continue
            if entry.is_symlink():
                problem = link_problem(entry.path, real_root)
            elif not entry.is_file(follow_symlinks=False):
                problem = "not a regular file (a pipe, socket or device is never read)"
            else:
                problem = None
            yield Found(relative, entry.path, problem)
        pending.extend(reversed(subdirs))


def link_problem(path: str, real_root: str) -> str | None:
    target = os.path.realpath(path)
    if not os.path.exists(target):
        return "broken symbolic link"
    if os.path.commonpath([target, real_root]) != real_root:
        return "symbolic link points outside the enqueued folder; not followed"
    if not os.path.isfile(target):
        return "symbolic link does not point to a file"
    return None


def read(found: Found, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[bytes | None, str | None]:
    """The file's bytes, or None and the reason it cannot be sent (never more than max_bytes read)."""
    if found.problem:
        return None, found.problem
    try:
        with open(found.path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        return None, f"cannot read file: {exc.strerror or exc}"
    if len(data) > max_bytes:
        return None, f"file is over the size limit of {max_bytes} bytes"
    return data, None
