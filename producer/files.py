"""Finding the images of a folder: recursive, filtered, and never outside the folder."""

from __future__ import annotations

import fnmatch
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from digits.defaults import EXTENSIONS, MAX_BYTES
from digits.files import display_name, read_file


class Found(NamedTuple):
    """One file to classify: its path relative to the folder, and why it cannot be read, if so.
    A named tuple: one is made for every file found, and a frozen dataclass cost 2.0 µs of it, this 0.4."""

    relative: str
    path: str
    problem: str | None = None


def walk(root: Path, extensions: tuple[str, ...] = EXTENSIONS, globs: tuple[str, ...] = (),
         skip_dirs: tuple[str, ...] = (), part: Share | None = None) -> Iterator[Found]:
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
        names, kinds = listing(directory)
        base = directory.rstrip(os.sep) + os.sep  # os.path.join's work, once a folder instead of once a file
        subdirs = []
        for name in names:
            kind = kinds.get(name)
            path = base + name
            if kind == DIRECTORY:
                if name not in skip_dirs:
                    subdirs.append((path, f"{prefix}{name}/"))
                continue
            if wanted and not name.lower().endswith(wanted):
                continue
            relative = display_name(prefix + name)
            if globs and not any(fnmatch.fnmatch(relative, g) for g in globs):
                continue
            if part is not None and not part.holds(relative):
                continue
            if kind == LINK:
                problem = link_problem(path, real_root)
            elif kind == SPECIAL:
                problem = "not a regular file (a pipe, socket or device is never read)"
            else:
                problem = None
            yield Found(relative, path, problem)
        pending.extend(reversed(subdirs))


DIRECTORY, LINK, SPECIAL = "directory", "link", "special"


@dataclass(frozen=True)
class Share:
    """The files of a run's folder that one producer sends: those whose path hashes to one of
    `parts` (0-based) of `of`. Producers on several processes or hosts, each sending its own
    share of one run, send every file exactly once between them; the whole folder is one share."""

    parts: frozenset[int] = frozenset({0})
    of: int = 1

    @classmethod
    def parse(cls, text: str) -> Share:
        """`K/N` (1 <= K <= N), as an operator writes it: the K-th of N shares."""
        part, _, of = text.partition("/")
        if not (part.isdigit() and of.isdigit() and 1 <= int(part) <= int(of)):
            raise ValueError(f"share {text!r}: expected K/N with 1 <= K <= N, e.g. 2/3")
        return cls(frozenset({int(part) - 1}), int(of))

    @classmethod
    def whole(cls, of: int) -> Share:
        """Every share of a run split `of` ways: the whole folder."""
        return cls(frozenset(range(of)), of)

    def part_of(self, relative: str) -> int:
        """Which share a path belongs to: a hash of the path, the same on every host (a run in one
        share has nothing to hash)."""
        return zlib.crc32(relative.encode("utf-8", "surrogatepass")) % self.of if self.of > 1 else 0

    def holds(self, relative: str) -> bool:
        return self.part_of(relative) in self.parts


def listing(directory: str) -> tuple[list[str], dict[str, str]]:
    """A folder's entry names, sorted, and the kind of each entry that is not a regular file.

    Names, not DirEntry objects: sorting needs the whole folder in memory, and a flat folder of
    200,000 files held as DirEntry objects cost 48 MiB (docs/benchmarks.md).
    """
    names: list[str] = []
    kinds: dict[str, str] = {}
    with os.scandir(directory) as scan:
        for entry in scan:
            names.append(entry.name)
            if entry.is_dir(follow_symlinks=False):
                kinds[entry.name] = DIRECTORY
            elif entry.is_symlink():
                kinds[entry.name] = LINK
            elif not entry.is_file(follow_symlinks=False):
                kinds[entry.name] = SPECIAL
    names.sort()
    return names, kinds


def link_problem(path: str, real_root: str) -> str | None:
    target = os.path.realpath(path)
    if not os.path.exists(target):
        return "broken symbolic link"
    if os.path.commonpath([target, real_root]) != real_root:
        return "symbolic link points outside the enqueued folder; not followed"
    if not os.path.isfile(target):
        return "symbolic link does not point to a file"
    return None


def read(found: Found, max_bytes: int = MAX_BYTES) -> tuple[bytes | None, str | None]:
    """The file's bytes, or None and the reason it cannot be sent (never more than max_bytes read)."""
    return (None, found.problem) if found.problem else read_file(found.path, max_bytes)
