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
# Optional keys of a curve: the per-run values behind the mean (one point per run: a seed of a
# conversation), drawn as small dots behind the mean.
POINT_KEYS = ("points_x", "points_y")


def _points(curve: Mapping[str, object]) -> tuple[np.ndarray, np.ndarray] | None:
    if not all(k in curve for k in POINT_KEYS):
        return None
    px = np.asarray(curve["points_x"], dtype=float).ravel()
    py = np.asarray(curve["points_y"], dtype=float).ravel()
    if px.shape != py.shape:
        raise ValueError(f"points_x and points_y differ in length ({px.shape[0]} vs {py.shape[0]})")
    keep = np.isfinite(px) & np.isfinite(py)
    return (px[keep], py[keep]) if keep.any() else None


def _jitter(x: np.ndarray, width: float, log: bool) -> np.ndarray:
    """Spread points at one x sideways by up to ``width`` (a fraction of a decade on a log axis),
    deterministically, so two reports of one sweep are the same picture."""
    offsets = np.random.default_rng(0).uniform(-width, width, len(x))
    return x * 10**offsets if log else x + offsets


def _draw_points(ax, curve: Mapping[str, object], color: str, x_span: float, log: bool) -> bool:
    pts = _points(curve)
    if pts is None:
        return False
    px, py = pts
    ax.scatter(
        _jitter(px, x_span, log), py, s=12, color=color, alpha=0.45, lw=0, zorder=1, label="runs (seeds)"
    )
    return True


def _numeric_jitter(all_x: np.ndarray, log: bool) -> float:
    """A sideways spread for the per-run dots: 4 % of the smallest gap between design points."""
    xs = np.log10(all_x[all_x > 0]) if log else all_x
    gaps = np.diff(np.unique(xs))
    return 0.04 * float(gaps.min()) if len(gaps) else 0.02


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

    A curve may also have ``points_x`` / ``points_y``: the per-run values (one per seed and
    conversation), drawn as faint dots behind the mean. Each panel has its own y axis (metrics
    have different units); x ticks sit on the design points
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
        _draw_points(ax, curves[i][1], color, _numeric_jitter(all_x, log_x), log_x)
        band = np.isfinite(low) & np.isfinite(high)
        if band.any():
            ax.fill_between(x, low, high, where=band, color=color, alpha=0.2, lw=0, label="CI (low–high)")
        ax.plot(x, mean, color=color, lw=1.6, marker="o", ms=4.5, label="mean", zorder=3)
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
    band. Curves with ``points_x`` / ``points_y`` get their per-run values as faint dots behind
    (beside their series' marker over categories). ``notes[i][k]`` (optional) is a short text
    printed under category ``k`` of panel ``i``
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
        curves_in = panels[i][1]
        if categories is None:
            all_x = np.unique(np.concatenate([a[0][np.isfinite(a[0])] for a in arrays.values()]))
            spread = _numeric_jitter(all_x, log_x)
        for s, name in enumerate(names):
            if name not in arrays:
                continue
            if categories is not None:
                pts = _points(curves_in[name])
                if pts is not None:
                    px, py = pts
                    px = _jitter(px + (s - (n_series - 1) / 2) * dodge, dodge * 0.3, False)
                    ax.scatter(px, py, s=12, color=colour[name], alpha=0.45, lw=0, zorder=1)
            else:
                _draw_points(ax, curves_in[name], colour[name], spread, log_x)
            x, mean, low, high = arrays[name]
            order = np.argsort(x, kind="stable")
            x, mean, low, high = x[order], mean[order], low[order], high[order]
            c = colour[name]
            if categories is not None:
                pos = x + (s - (n_series - 1) / 2) * dodge
                err = np.vstack([mean - low, high - mean])
                err = np.where(np.isfinite(err), np.maximum(err, 0), 0)
                h = ax.errorbar(
                    pos, mean, yerr=err, fmt="o", color=c, ms=6, capsize=4, lw=1.6, label=name, zorder=3
                )
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
                (h,) = ax.plot(x, mean, color=c, lw=1.6, marker="o", ms=4.5, label=name, zorder=3)
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


def plot_heatmaps(
    panels: list[tuple[str, np.ndarray, str | None]],
    path: Path,
    x_label: str,
    y_label: str,
    x_values: list[str],
    y_values: list[str],
    *,
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """A two-parameter sweep as one heatmap per metric: ``panels`` = ``[(panel title, means,
    better), ...]`` with ``means[j, i]`` the mean at ``y_values[j]`` and ``x_values[i]`` (NaN: no
    value) and ``better`` = ``"higher"`` | ``"lower"`` | ``None``.

    Every cell is one design point (the axes are the design points, not a continuous scale) and
    carries its mean in writing. The colour map runs so that **brighter is better** in every panel
    (reversed where lower is better; a plain grey scale where neither is), so panels of different
    metrics read the same way.
    """
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("no heatmaps to plot")
    for panel_title, means, _ in panels:
        if np.shape(means) != (len(y_values), len(x_values)):
            raise ValueError(
                f"heatmap {panel_title!r}: means have shape {np.shape(means)}, expected "
                f"({len(y_values)}, {len(x_values)})"
            )
    n = len(panels)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    cell_w = max(0.55, 0.11 * max(len(v) for v in x_values))
    width = max(4.2, 1.6 + cell_w * len(x_values))
    height = max(3.0, 1.5 + 0.42 * len(y_values))
    fig = Figure(figsize=(width * ncols, height * nrows + 0.4), dpi=dpi, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, (panel_title, means, better) in enumerate(panels):
        ax = axes[i // ncols][i % ncols]
        m = np.asarray(means, dtype=float)
        cmap = {"higher": "viridis", "lower": "viridis_r"}.get(better or "", "Greys")
        finite = m[np.isfinite(m)]
        lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        mesh = ax.pcolormesh(np.ma.masked_invalid(m), cmap=cmap, vmin=lo, vmax=hi, edgecolors="white", lw=1)
        for (j, k), v in np.ndenumerate(m):
            if np.isfinite(v):
                frac = (v - lo) / (hi - lo)
                bright = (
                    frac > 0.55 if better == "higher" else frac < 0.45 if better == "lower" else frac < 0.5
                )
                ax.text(k + 0.5, j + 0.5, f"{v:.3g}", ha="center", va="center", fontsize=8,
                        color="black" if bright else "white")  # fmt: skip
            else:
                ax.text(k + 0.5, j + 0.5, "—", ha="center", va="center", fontsize=8, color="#888")
        ax.set_xticks(np.arange(len(x_values)) + 0.5, x_values, fontsize=8)
        ax.set_yticks(np.arange(len(y_values)) + 0.5, y_values, fontsize=8)
        ax.set_xlabel(x_label, fontsize=9)
        ax.set_ylabel(y_label, fontsize=9)
        note = "bright = better" if better else "no better direction"
        ax.set_title(f"{panel_title}\n({note})", fontsize=9.5)
        fig.colorbar(mesh, ax=ax, shrink=0.85).ax.tick_params(labelsize=7)
    for j in range(n, nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11, fontweight="bold")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
