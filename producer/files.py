"""Finding the images of a folder: recursive, filtered, and never outside the folder."""

from __future__ import annotations

import fnmatch
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from digits.defaults import EXTENSIONS, MAX_BYTES


class Found(NamedTuple):
    """One file to classify: its path relative to the folder, and why it cannot be read, if so.
    A named tuple: one is made for every file found, and a frozen dataclass cost 2.0 µs of it, this 0.4."""

    relative: str
    path: str
    problem: str | None = None


SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
ESCAPED = re.compile(r"\\(\\|n|r|t|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")


def display_name(raw: str) -> str:
    """A printable, JSON-safe name, one-to-one with the file's name (real_name reverses it): a
    backslash is doubled, undecodable bytes become \\xHH (80-ff), control characters \\n, \\r,
    \\t or \\xHH (00-7f), other unprintable characters \\uHHHH or \\UHHHHHHHH."""
    if raw.isprintable() and raw.isascii() and "\\" not in raw:
        return raw
    return "".join(escaped(c) for c in raw)


def escaped(c: str) -> str:
    if c in SHORT_ESCAPES:
        return SHORT_ESCAPES[c]
    if c.isprintable():
        return c
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as os.listdir gives it (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def real_name(display: str) -> str:
    """The file name a display name stands for (the inverse of display_name)."""
    def unescape(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in ("\\", "n", "r", "t"):
            return {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}[code]
        value = int(code[1:], 16)
        return chr(0xDC00 + value) if code[0] == "x" and value >= 0x80 else chr(value)

    return ESCAPED.sub(unescape, display) if "\\" in display else display


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
        """Which share a path belongs to: a hash of the path, the same on every host."""
        return zlib.crc32(relative.encode("utf-8", "surrogatepass")) % self.of

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
    if found.problem:
        return None, found.problem
    try:
        handle = os.open(found.path, os.O_RDONLY | os.O_CLOEXEC)  # no file object: 3.1 µs a file against 6.0
        try:
            data = read_up_to(handle, os.fstat(handle).st_size, max_bytes)
        finally:
            os.close(handle)
    except OSError as exc:
        return None, f"cannot read file: {exc.strerror or exc}"
    if len(data) > max_bytes:
        return None, f"file is over the size limit of {max_bytes} bytes"
    return data, None


def read_up_to(handle: int, size: int, max_bytes: int) -> bytes:
    """The file's bytes, at most max_bytes + 1 (one more tells it is over the limit). Reads are sized
    to the file: reading max_bytes + 1 at once allocates a max_bytes buffer for every file, which
    cost 4x the read itself on small scans (docs/benchmarks.md); one that grew since fstat (or
    reports no size) is read on."""
    parts: list[bytes] = []
    got, wanted = 0, min(size, max_bytes) + 1
    while got <= max_bytes:
        part = os.read(handle, (wanted if got < wanted else max_bytes + 1) - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


class UnsafePath(ValueError):
    """A relative path that would leave its folder; the message says how."""


def inside(root: Path, relative: str) -> str:
    """The real path of `relative` under root, for reading a file a run names (keying, corrections):
    refused if it is absolute, climbs with `..`, or resolves (through a link) outside root."""
    name = real_name(relative)  # a run names its files by display_name
    parts = name.replace("\\", "/").split("/")
    if not name or "\0" in name or os.path.isabs(name) or name.startswith("\\"):
        raise UnsafePath(f"{relative!r}: not a path relative to the run's folder")
    if ".." in parts:
        raise UnsafePath(f"{relative}: climbs out of the run's folder with '..'")
    real_root = os.path.realpath(root)
    target = os.path.realpath(os.path.join(real_root, name))
    if os.path.commonpath([target, real_root]) != real_root:
        raise UnsafePath(f"{relative}: leads outside the run's folder (a symbolic link to {target})")
    return target


def read_inside(root: Path, relative: str, max_bytes: int = MAX_BYTES) -> tuple[bytes | None, str | None]:
    """The bytes of `relative` under root, or None and why it cannot be read; UnsafePath if the
    path would leave root."""
    target = inside(root, relative)
    if not os.path.isfile(target):
        return None, f"{relative}: no such file in {root}" if not os.path.exists(target) else \
            f"{relative}: not a regular file"
    data, problem = read(Found(relative, target), max_bytes)
    return data, problem and f"{relative}: {problem}"
