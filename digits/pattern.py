"""The expected format of a code, when the user knows it: `--expect-digits 5` or `#####-####`."""

from __future__ import annotations

import re
from dataclasses import dataclass

PATTERN = re.compile(r"^(#+)([- ]#+)*$")


@dataclass(frozen=True)
class Pattern:
    """The expected format: digit groups, e.g. (5, 4) for ZIP+4, and the separator between them."""

    groups: tuple[int, ...]
    separator: str = "-"

    @property
    def digits(self) -> int:
        return sum(self.groups)

    @property
    def hyphenated(self) -> bool:
        """The format has a hyphen: without one, no blob on the page is read as a hyphen."""
        return len(self.groups) > 1 and self.separator == "-"


def parse_pattern(hint: str) -> Pattern:
    """'5' (a count) or '#####-####' (digits as #, separated by '-' or ' ')."""
    hint = hint.strip()
    if hint.isdigit() and 1 <= int(hint) <= 32:
        return Pattern((int(hint),))
    if not PATTERN.match(hint):
        raise ValueError(f"expected digits {hint!r}: give a count such as 5 or a pattern such as #####-####")
    separator = "-" if "-" in hint else " "
    return Pattern(tuple(len(group) for group in re.split(r"[- ]", hint)), separator)
