"""The PNG chart: one panel per test, a horizontal bar per backend, fcgibridge rows in red."""

from __future__ import annotations

from pathlib import Path

from harness.report import Run
from harness.stats import Cell, cells

FCGIBRIDGE_COLOUR = "#d9534f"
PEER_COLOUR = "#7a8ca3"
NGINX_COLOUR = "#c8ced6"


def colour(name: str, is_fcgibridge: bool) -> str:
    if is_fcgibridge:
        return FCGIBRIDGE_COLOUR
    return NGINX_COLOUR if name == "nginx" else PEER_COLOUR


def bar(run: Run, c: Cell | None) -> tuple[float, float, float]:
    """A backend's value and its whiskers below and above: req/s through nginx (median, min-max), or the
    server CPU µs per request in --direct mode, where req/s of different clients do not compare."""
    if c is None:
        return 0.0, 0.0, 0.0
    if run.mode == "direct":
        return c.backend_cpu_us or 0.0, 0.0, 0.0
    return c.median, c.median - c.low, c.high - c.median


def bars(run: Run, test: str) -> tuple[list[float], list[float], list[float]]:
    by_cell = cells(run.measurements)
    triples = [bar(run, by_cell.get((backend.name, test))) for backend in run.backends]
    return [t[0] for t in triples], [t[1] for t in triples], [t[2] for t in triples]


def write(run: Run, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [b.name for b in run.backends]
    figure, axes = plt.subplots(1, len(run.loads), figsize=(4.6 * len(run.loads) + 1.6, 1.2 + 0.32 * len(names)),
                                sharey=True, squeeze=False)
    positions = list(range(len(names)))[::-1]  # the first backend on top
    colours = [colour(b.name, b.is_fcgibridge) for b in run.backends]
    unit = "server CPU µs per request (lower is better)" if run.mode == "direct" else "requests/s (median, min-max)"
    for ax, load in zip(axes[0], run.loads, strict=True):
        values, low, high = bars(run, load.name)
        ax.barh(positions, values, xerr=[low, high], color=colours, capsize=2, error_kw={"elinewidth": 0.8})
        for y, value, above in zip(positions, values, high, strict=True):
            if value:
                ax.text(value + above, y, f"  {value:,.0f}", va="center", fontsize=7)
        ax.set_title(load.title, fontsize=10)
        ax.set_xlabel(unit, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.margins(x=0.22)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(positions, names)
    for label, backend in zip(axes[0][0].get_yticklabels(), run.backends, strict=True):
        if backend.is_fcgibridge:
            label.set_fontweight("bold")
    figure.suptitle(f"{run.machine['cpu']}, {run.machine['cores']} cores; {run.setup}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
