"""The plots of docs/benchmarks.md: images/s against batch size (one line per worker count) and
against the worker count (benchmarks.scale), drawn on one shared figure style."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def rate_figure(title: str, path: Path) -> Iterator[Any]:
    """Axes to draw images/s lines on; on exit, the shared style (y from 0, grid, legend) and the PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    yield axes
    axes.set_ylabel("images/s")
    axes.set_ylim(bottom=0)
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def plot_sweep(sweep: dict[int, dict[int, float]], ceilings: dict[int, float], title: str, path: Path) -> None:
    """sweep: workers -> batch size -> images/s (end to end); ceilings: cores -> in-process images/s."""
    with rate_figure(title, path) as axes:
        for workers, rates in sorted(sweep.items()):
            sizes = sorted(rates)
            line = axes.plot(sizes, [rates[s] for s in sizes], marker="o",
                             label=f"digits-producer run, {workers} worker{'s' if workers > 1 else ''}")
            if workers in ceilings:
                axes.axhline(ceilings[workers], linestyle="--", color=line[0].get_color(), alpha=0.7,
                             label=f"in-process, {workers} core{'s' if workers > 1 else ''}")
        axes.set_xscale("log", base=2)
        all_sizes = sorted({s for rates in sweep.values() for s in rates})
        axes.set_xticks(all_sizes, [str(s) for s in all_sizes])
        axes.set_xlabel("batch size (images per job)")
