"""How a training run reports its progress: one line at a time, with the time left."""

from __future__ import annotations

import math
from collections.abc import Callable

Report = Callable[[str], None]  # where the lines go: print, click.echo to stderr, a test's list


def eta(seconds: float) -> str:
    minutes, secs = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{secs:02d}s"
