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


def plot_comparison(
    panels: list[tuple[str, dict[str, Mapping[str, object]]]],
    path: Path,
    x_label: str,
    *,
    categories: list[str] | None = None,
    log_x: bool = False,
    series_label: str | None = None,
    notes: list[list[str]] | None = None,
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """Several series per panel: ``panels`` = ``[(panel title, {series label: curve}), ...]``.

    Each curve has ``x``, ``mean``, ``low``, ``high`` (as :func:`plot_robustness_curves`); every
    series keeps its colour in every panel. With ``categories`` the x axis is categorical: ``x``
    holds indices into ``categories``, each category is one group, and the series sit side by side
    in it as a mean marker with its ``low..high`` interval as error bars (no lines: there is nothing
    between two categories to interpolate). Otherwise x is numeric: one line per series with its
    band. ``notes[i][k]`` (optional) is a short text printed under category ``k`` of panel ``i``
    (e.g. a paired difference with its CI), printed at the top
    of the panel above that category.
    """
    from matplotlib.figure import Figure
    from matplotlib.transforms import blended_transform_factory

    if not panels or not any(series for _, series in panels):
        raise ValueError("no curves to plot")
    names: list[str] = []
    data: list[tuple[str, dict[str, tuple[np.ndarray, ...]]]] = []
    for panel_title, series in panels:
        arrays = {}
        for name, curve in series.items():
            arrays[name] = _arrays(f"{panel_title} / {name}", curve)
            if name not in names:
                names.append(name)
        data.append((panel_title, arrays))
    if categories is not None:
        for panel_title, arrays in data:
            for name, (x, *_rest) in arrays.items():
                bad = x[np.isfinite(x) & ((x < 0) | (x >= len(categories)) | (x != np.round(x)))]
                if len(bad) or not np.all(np.isfinite(x)):
                    raise ValueError(f"curve {panel_title!r} / {name!r}: x must be category indices")
    elif log_x:
        for panel_title, arrays in data:
            for name, (x, *_rest) in arrays.items():
                if np.any(x[np.isfinite(x)] <= 0):
                    raise ValueError(f"curve {panel_title!r} / {name!r}: log_x needs x > 0")
    colour = {name: f"C{i % 10}" for i, name in enumerate(names)}
    n = len(data)
    ncols = min(2 if categories is not None and n == 4 else 3, n)
    nrows = math.ceil(n / ncols)
    width = 5.0 if categories is not None else 4.2
    fig = Figure(figsize=(width * ncols, 3.4 * nrows + 0.6), dpi=dpi, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    n_series = len(names)
    dodge = min(0.22, 0.7 / max(n_series, 1))
    handles = {}
    for i, (panel_title, arrays) in enumerate(data):
        ax = axes[i // ncols][i % ncols]
        for s, name in enumerate(names):
            if name not in arrays:
                continue
            x, mean, low, high = arrays[name]
            order = np.argsort(x, kind="stable")
            x, mean, low, high = x[order], mean[order], low[order], high[order]
            c = colour[name]
            if categories is not None:
                pos = x + (s - (n_series - 1) / 2) * dodge
                err = np.vstack([mean - low, high - mean])
                err = np.where(np.isfinite(err), np.maximum(err, 0), 0)
                h = ax.errorbar(pos, mean, yerr=err, fmt="o", color=c, ms=6, capsize=4, lw=1.6, label=name)
                left = s < (n_series - 1) / 2  # value labels on the outer side of each group
                for px, m in zip(pos, mean, strict=True):
                    if np.isfinite(m):
                        ax.annotate(
                            f"{m:.2f}",
                            (px, m),
                            xytext=(-6 if left else 6, 0),
                            textcoords="offset points",
                            fontsize=8,
                            color=c,
                            va="center",
                            ha="right" if left else "left",
                        )
            else:
                band = np.isfinite(low) & np.isfinite(high)
                if band.any():
                    ax.fill_between(x, low, high, where=band, color=c, alpha=0.18, lw=0)
                (h,) = ax.plot(x, mean, color=c, lw=1.6, marker="o", ms=4.5, label=name)
            handles.setdefault(name, h)
        ax.set_title(panel_title, fontsize=9.5)
        ax.grid(True, axis="y" if categories is not None else "both", color="#e5e5e5", lw=0.6)
        ax.tick_params(labelsize=8)
        if categories is not None:
            ax.set_xticks(range(len(categories)), categories, fontsize=8)
            ax.set_xlim(-0.5, len(categories) - 0.5)
            if notes is not None and i < len(notes) and any(notes[i]):
                lo, hi = ax.get_ylim()  # make room above the data for one line of notes
                ax.set_ylim(lo, hi + 0.14 * (hi - lo))
                trans = blended_transform_factory(ax.transData, ax.transAxes)
                for k, text in enumerate(notes[i][: len(categories)]):
                    if text:
                        ax.text(
                            k, 0.975, text, transform=trans, ha="center", va="top", fontsize=8, color="#333"
                        )
        else:
            if log_x:
                ax.set_xscale("log")
            all_x = np.unique(np.concatenate([a[0][np.isfinite(a[0])] for a in arrays.values()]))
            if 0 < len(all_x) <= 12:
                ax.set_xticks(all_x, [f"{v:g}" for v in all_x])
                ax.minorticks_off()
        ax.set_xlabel(x_label, fontsize=9)
    for j in range(n, nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    fig.legend(
        list(handles.values()),
        list(handles),
        title=series_label,
        loc="outside lower center",
        ncols=min(len(handles), 6),
        fontsize=9,
        title_fontsize=9,
        frameon=False,
    )
    if title:
        fig.suptitle(title, fontsize=11, fontweight="bold")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
