"""Image files read from disk, bounded and never outside their folder: by the producer (the files
it found) and by workers that read a shared folder (`digits-worker --files-root`).

Paths travel as display names (one line of printable text, one-to-one with the file's name):
`display_name` makes one, `real_name` reverses it.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from digits.defaults import MAX_BYTES

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


def read_file(path: str, max_bytes: int = MAX_BYTES, follow_link: bool = True) -> tuple[bytes | None, str | None]:
    """The file's bytes, or None and the reason it cannot be read (never more than max_bytes read).
    Opened without blocking and checked to be a regular file once open: a pipe put in a file's
    place after it was found is refused, not waited on. With follow_link False, a symbolic link
    is not opened at all (the error says so)."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow_link else os.O_NOFOLLOW)
    try:
        handle = os.open(path, flags)  # no file object: 3.1 µs a file against 6.0
        try:
            status = os.fstat(handle)
            if not stat.S_ISREG(status.st_mode):
                return None, "not a regular file (a pipe, socket or device is never read)"
            data = read_up_to(handle, status.st_size, max_bytes)
        finally:
            os.close(handle)
    except OSError as exc:
        return None, f"cannot read file: {exc.strerror or exc}"
    if len(data) > max_bytes:
        return None, f"file is over the size limit of {max_bytes} bytes"
    return data, None


def read_up_to(handle: int, size: int, max_bytes: int) -> bytes:
    """A regular file's bytes, at most max_bytes + 1 (one more tells it is over the limit). Reads
    are sized to the file: reading max_bytes + 1 at once allocates a max_bytes buffer for every
    file, which cost 4x the read itself on small scans (docs/benchmarks.md); one that grew since
    fstat (or reports no size) is read on. A short read is the file's end: no read more to find it."""
    parts: list[bytes] = []
    got, wanted = 0, min(size, max_bytes) + 1
    while got <= max_bytes:
        asked = (wanted if got < wanted else max_bytes + 1) - got
        part = os.read(handle, asked)
        parts.append(part)
        got += len(part)
        if len(part) < asked:
            break
    return b"".join(parts)


class UnsafePath(ValueError):
    """A relative path that would leave its folder; the message says how."""


def inside(root: Path, relative: str) -> str:
    """The real path of `relative` under root, for reading a file a run names (keying, corrections,
    a worker reading a shared folder): refused if it is absolute, climbs with `..`, or resolves
    (through a link) outside root."""
    return inside_real(os.path.realpath(root), relative)


def inside_real(real_root: str, relative: str) -> str:
    """`inside` for a root already resolved (os.path.realpath): a worker resolves a run's folder
    once a batch, not once an image (a realpath is 12 µs)."""
    name = real_name(relative)  # a run names its files by display_name
    parts = name.replace("\\", "/").split("/")
    if not name or "\0" in name or os.path.isabs(name) or name.startswith("\\"):
        raise UnsafePath(f"{relative!r}: not a path relative to the run's folder")
    if ".." in parts:
        raise UnsafePath(f"{relative}: climbs out of the run's folder with '..'")
    target = os.path.realpath(os.path.join(real_root, name))
    if os.path.commonpath([target, real_root]) != real_root:
        raise UnsafePath(f"{relative}: leads outside the run's folder (a symbolic link to {target})")
    return target


def read_in_folder(real_folder: str, relative: str, max_bytes: int = MAX_BYTES,
                   folders: dict[str, str] | None = None) -> tuple[bytes | None, str | None]:
    """The bytes of `relative` under a resolved folder, or None and why not; UnsafePath if the path
    would leave it. A plain file name that is not a link is read directly from its folder, opened
    refusing a link put in its place meanwhile; its folder is resolved with `inside` once and kept
    in `folders` (a realpath is 12 µs, most of reading a digit's file). Any other path (a link, an
    odd name) is resolved whole."""
    head, separator, tail = relative.rpartition("/")
    name = real_name(tail)
    plain = name not in ("", ".", "..") and not any(c in name for c in ("/", "\\", "\0"))
    if plain and (head or not separator):  # "/name" is absolute: refused below
        directory = real_folder if not head else resolved_folder(real_folder, head, {} if folders is None else folders)
        if not os.path.islink(direct := f"{directory}{os.sep}{name}"):
            return read_file(direct, max_bytes, follow_link=False)
    return read_file(inside_real(real_folder, relative), max_bytes)


def resolved_folder(real_folder: str, relative: str, folders: dict[str, str]) -> str:
    """A subfolder of a resolved folder, resolved and checked to stay inside it, once per name."""
    if relative not in folders:
        folders[relative] = inside_real(real_folder, relative)
    return folders[relative]


def read_inside(root: Path, relative: str, max_bytes: int = MAX_BYTES) -> tuple[bytes | None, str | None]:
    """The bytes of `relative` under root, or None and why it cannot be read; UnsafePath if the
    path would leave root."""
    target = inside(root, relative)
    if not os.path.isfile(target):
        return None, f"{relative}: no such file in {root}" if not os.path.exists(target) else \
            f"{relative}: not a regular file"
    data, problem = read_file(target, max_bytes)
    return data, problem and f"{relative}: {problem}"
