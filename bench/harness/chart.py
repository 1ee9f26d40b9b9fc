"""The PNG chart: one panel per test, a horizontal bar per backend (median, min-max whisker)."""

from __future__ import annotations

from pathlib import Path

from harness.report import Run
from harness.stats import cells

FCGIBRIDGE_COLOUR = "#d9534f"
PEER_COLOUR = "#7a8ca3"
NGINX_COLOUR = "#c8ced6"


def colour(name: str, is_fcgibridge: bool) -> str:
    if is_fcgibridge:
        return FCGIBRIDGE_COLOUR
    return NGINX_COLOUR if name == "nginx" else PEER_COLOUR


def write(run: Run, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_cell = cells(run.measurements)
    names = [b.name for b in run.backends]
    height = 1.2 + 0.32 * len(names)
    figure, axes = plt.subplots(1, len(run.loads), figsize=(4.6 * len(run.loads) + 1.6, height), sharey=True,
                                squeeze=False)
    positions = list(range(len(names)))[::-1]  # the first backend on top
    for ax, load in zip(axes[0], run.loads, strict=True):
        medians, low, high, colours = [], [], [], []
        for backend in run.backends:
            c = by_cell.get((backend.name, load.name))
            medians.append(c.median if c else 0.0)
            low.append(c.median - c.low if c else 0.0)
            high.append(c.high - c.median if c else 0.0)
            colours.append(colour(backend.name, backend.is_fcgibridge))
        ax.barh(positions, medians, xerr=[low, high], color=colours, capsize=2, error_kw={"elinewidth": 0.8})
        for y, value in zip(positions, medians, strict=True):
            if value:
                ax.text(value, y, f" {value:,.0f}", va="center", fontsize=7)
        ax.set_title(load.title, fontsize=10)
        ax.set_xlabel("requests/s (median, min-max)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.margins(x=0.22)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(positions, names)
    figure.suptitle(f"{run.machine['cpu']}, {run.machine['cores']} cores; {run.setup}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
