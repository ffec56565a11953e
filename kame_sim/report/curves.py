"""Robustness curves: one panel per metric, mean with its confidence band, against a swept knob.

The numbers come from ``kame_sim.metrics.aggregate.robustness_curve`` (``x``, ``mean``, ``low``,
``high`` arrays); this module only draws them, so a figure can never disagree with the table it
illustrates. Markers sit on the design points because a sweep has few of them and the straight
lines between them are interpolation, not data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

CURVE_KEYS = ("x", "mean", "low", "high")


def _arrays(metric: str, curve: Mapping[str, object]) -> tuple[np.ndarray, ...]:
    """The four arrays as floats, checked for matching lengths (NaN stays NaN: a gap in the line)."""
    missing = [k for k in CURVE_KEYS if k not in curve]
    if missing:
        raise ValueError(f"curve {metric!r}: missing {', '.join(missing)} (needs {', '.join(CURVE_KEYS)})")
    arrs = tuple(np.asarray(curve[k], dtype=float).ravel() for k in CURVE_KEYS)
    if len({a.shape for a in arrs}) != 1:
        shapes = ", ".join(f"{k}={a.shape[0]}" for k, a in zip(CURVE_KEYS, arrs, strict=True))
        raise ValueError(f"curve {metric!r}: arrays differ in length ({shapes})")
    return arrs


def plot_robustness_curves(
    curves: list[tuple[str, dict]],
    path: Path,
    x_label: str,
    log_x: bool = False,
    *,
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """Draw one panel per ``(metric, curve)`` to a PNG at ``path`` and return ``path``.

    Each panel has its own y axis (metrics have different units); x ticks sit on the design points
    when there are at most 12 of them. A NaN in ``low``/``high`` leaves a gap in the band. With
    ``log_x`` every x must be positive: a log axis silently drops non-positive points otherwise,
    which would hide design points.
    """
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("no curves to plot")
    data = [(metric, *_arrays(metric, curve)) for metric, curve in curves]
    if log_x:
        for metric, x, *_ in data:
            if np.any(x[np.isfinite(x)] <= 0):
                raise ValueError(f"curve {metric!r}: log_x needs x > 0")
    n = len(data)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows + 0.4), dpi=dpi, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    all_x = np.unique(np.concatenate([x[np.isfinite(x)] for _, x, *_ in data]))
    for i, (metric, x, mean, low, high) in enumerate(data):
        ax = axes[i // ncols][i % ncols]
        order = np.argsort(x, kind="stable")
        x, mean, low, high = x[order], mean[order], low[order], high[order]
        color = f"C{i % 10}"
        band = np.isfinite(low) & np.isfinite(high)
        if band.any():
            ax.fill_between(x, low, high, where=band, color=color, alpha=0.2, lw=0, label="CI (low–high)")
        ax.plot(x, mean, color=color, lw=1.6, marker="o", ms=4.5, label="mean")
        ax.set_title(metric, fontsize=10)
        ax.grid(True, color="#e5e5e5", lw=0.6)
        ax.tick_params(labelsize=8)
        if log_x:
            ax.set_xscale("log")
        if 0 < len(all_x) <= 12:  # few design points: tick exactly those, in plain numbers
            ax.set_xticks(all_x, [f"{v:g}" for v in all_x])
            ax.minorticks_off()
        ax.set_xlabel(x_label, fontsize=9)
        if i == 0:
            ax.legend(fontsize=8, frameon=False)
    for j in range(n, nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11, fontweight="bold")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
