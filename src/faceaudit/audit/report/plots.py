"""Plots as inline SVG strings (matplotlib, no pyplot and no display: nothing global changes).

- dot_plot: per-group values with 95% interval bars, one panel per threshold side by side,
  groups sorted by value, small cells drawn hollow and labelled "small sample";
  several series (reports) per group for comparisons.
- det_plot: DET curves per group (false match rate on a log axis).

Colours are Okabe and Ito's colour-blind-safe palette, and nothing is told by colour
alone: small cells differ in fill and label, series in marker shape, curves in line style.
Text is drawn as paths so that every browser and printer shows the same picture; the
words are in each SVG's <title> and <desc>, and the numbers in the table beside it.
"""

from __future__ import annotations

import io
import re
import textwrap
from dataclasses import dataclass
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

# Okabe & Ito (2008). Yellow is left out: too pale on white paper.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]
INK = "#222222"
MUTED = "#555555"
MARKERS = ["o", "s", "D", "^", "v", "P", "X", "h"]
LINESTYLES = ["-", (0, (5, 2)), (0, (1, 1.5)), (0, (5, 2, 1, 2))]

_RC: dict[Any, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9.5,
    "axes.edgecolor": "#888888",
    "xtick.color": MUTED,
    "ytick.color": INK,
    "axes.labelcolor": INK,
    "svg.fonttype": "path",
    "svg.hashsalt": "faceaudit",  # stable ids: the same report gives the same SVG
    "legend.frameon": False,
    "legend.fontsize": 9,
}


@dataclass(frozen=True)
class Point:
    value: float
    low: float
    high: float
    small: bool = False


@dataclass
class Series:
    label: str
    points: dict  # (block index, row index, column index) -> Point
    colour: str = PALETTE[0]
    marker: str = "o"


@dataclass
class Block:
    title: str  # "" for none
    rows: list[str]  # labels, top first


@dataclass
class Svg:
    text: str
    width_px: float
    height_px: float


def _percent_tick(x, _pos=None) -> str:
    return f"{round(x * 100, 6):g}%"


def _percent_axis(ax, top: float) -> None:
    ax.xaxis.set_major_formatter(FuncFormatter(_percent_tick))


def dot_plot(*, blocks: list[Block], columns: list[str], series: list[Series],
             overall: list[Point | None] | None, rate: bool, xlabel: str,
             title: str, desc: str, fig_id: str, small_note: str = "small sample") -> Svg:
    """Horizontal dot plot: rows are groups (blocks stacked), columns are thresholds.

    The axis range follows the groups that are not small samples (and everyone), so that
    one tiny group's wide interval does not squash the rest: a small sample's bar may run
    off the edge (drawn with an arrow head), its exact interval is in the table.
    """
    nrows_total = sum(len(b.rows) for b in blocks)
    multi = len(series) > 1
    small_rows = {(bi, ri) for s in series for (bi, ri, _), p in s.points.items() if p.small}
    row_h = 0.30 if not multi else 0.20 + 0.10 * len(series)
    label_chars = max([len(r) + (15 if (bi, ri) in small_rows else 0)
                       for bi, b in enumerate(blocks) for ri, r in enumerate(b.rows)] + [8])
    per_column = 6.0 if len(columns) == 1 else (3.6 if len(columns) == 2 else 2.6)
    width = min(12.4, 0.6 + 0.075 * label_chars + per_column * len(columns))
    height = 1.25 + row_h * nrows_total + 0.4 * len(blocks) + (0.25 * ((len(series) + 2) // 4) if multi else 0)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        grid = fig.add_gridspec(len(blocks), len(columns),
                                height_ratios=[len(b.rows) + 0.6 for b in blocks])
        for c, column in enumerate(columns):
            pts = [p for s in series for (bi, ri, ci), p in s.points.items() if ci == c]
            # The range follows the groups that are not small samples (all of them if every
            # group is small) and everyone; a small sample beyond it is drawn at the edge.
            ref = [p for p in pts if not p.small] or list(pts)
            if overall and overall[c] is not None:
                ref.append(overall[c])
                pts = pts + [overall[c]]
            ref = ref or [Point(0.0, 0.0, 1.0)]
            top = max(p.high for p in ref)
            bottom = min([p.low for p in ref] + [p.value for p in pts])
            # Dots, not bars: when every value sits far from zero (e.g. 85% to 98% right),
            # the axis starts near the lowest interval so that differences stay visible.
            low = bottom - 0.08 * (top - bottom) if bottom > 0.3 * top > 0 else min(0.0, bottom)
            span = (top - low) or 1.0
            right = top + 0.07 * span
            for b, block in enumerate(blocks):
                ax = fig.add_subplot(grid[b, c])
                n = len(block.rows)
                for r in range(n):
                    if r % 2 == 1:
                        ax.axhspan(n - 1 - r - 0.5, n - 1 - r + 0.5, color="#f1f1f1", lw=0, zorder=0)
                if overall and (o := overall[c]) is not None:
                    ax.axvspan(o.low, o.high, color="#d4d4d4", alpha=0.6, lw=0, zorder=0.5)
                    ax.axvline(o.value, color=MUTED, lw=1.1, ls=(0, (4, 2)), zorder=1)
                m = len(series)
                step = min(0.26, 0.75 / max(m, 1))
                for si, s in enumerate(series):
                    dy = (si - (m - 1) / 2) * step if multi else 0.0
                    mine = [((n - 1 - ri) - dy, p) for (bi, ri, ci), p in s.points.items() if bi == b and ci == c]
                    if not mine:
                        continue
                    for small in (False, True):  # small samples' bars are drawn fainter
                        sel = [(y, p) for y, p in mine if p.small == small]
                        if not sel:
                            continue
                        ax.errorbar([p.value for _, p in sel], [y for y, _ in sel],
                                    xerr=[[max(p.value - p.low, 0.0) for _, p in sel],
                                          [max(min(p.high, right) - p.value, 0.0) for _, p in sel]],
                                    fmt="none", ecolor=s.colour, elinewidth=1.1 if small else 1.6,
                                    alpha=0.55 if small else 1.0, capsize=3.5, capthick=1.2, zorder=2)
                    for small in (False, True):
                        sel = [(y, p) for y, p in mine if p.small == small and p.value <= right]
                        if sel:
                            ax.plot([p.value for _, p in sel], [y for y, _ in sel], marker=s.marker,
                                    ms=7 if not multi else 6, mec=s.colour, mew=1.6,
                                    mfc="white" if small else s.colour, ls="none", zorder=3)
                    over = [y for y, p in mine if p.high > right and p.value <= right]
                    if over:  # the interval runs on past the edge
                        ax.plot([right] * len(over), over, marker=">", ms=5, color=s.colour, ls="none",
                                alpha=0.55, clip_on=False, zorder=3)
                    off = [y for y, p in mine if p.value > right]
                    if off:  # a small sample's value beyond the range: a hollow arrow at the edge
                        ax.plot([right] * len(off), off, marker=">", ms=8, mec=s.colour, mfc="white",
                                mew=1.6, ls="none", clip_on=False, zorder=3)
                ax.set_ylim(-0.6, n - 0.4)
                ax.set_xlim(low, right)
                ax.set_yticks(range(n))
                if c == 0:
                    labels = []
                    for y in range(n):
                        ri = n - 1 - y
                        labels.append(block.rows[ri] + (" (small sample)" if (b, ri) in small_rows else ""))
                    ax.set_yticklabels(labels)
                    for y, label in enumerate(ax.get_yticklabels()):
                        if (b, n - 1 - y) in small_rows:
                            label.set_color(MUTED)
                            label.set_fontstyle("italic")
                    if block.title:
                        ax.set_ylabel(block.title, color=MUTED)
                else:
                    ax.set_yticklabels([])
                ax.tick_params(axis="y", length=0)
                ax.grid(axis="x", color="#dddddd", lw=0.8)
                ax.set_axisbelow(True)
                for side in ("top", "right", "left"):
                    ax.spines[side].set_visible(False)
                if rate:
                    _percent_axis(ax, right)
                ax.xaxis.set_major_locator(MaxNLocator(nbins=4 if len(columns) > 2 else 6, min_n_ticks=3))
                if b == 0 and column:
                    wrap = 24 if len(columns) > 2 else 40
                    text = "\n".join(textwrap.fill(part, wrap) for part in column.split("\n"))
                    ax.set_title(text, loc="left", fontweight="bold", color=INK, fontsize=10)
                if b < len(blocks) - 1:
                    ax.tick_params(axis="x", labelbottom=False)
                elif len(columns) == 1:
                    ax.set_xlabel(xlabel)
        if len(columns) > 1:
            fig.supxlabel(xlabel, fontsize=10, color=INK)
        handles = []
        if multi:
            handles += [Line2D([], [], color=s.colour, marker=s.marker, lw=1.6, mfc=s.colour,
                               label=s.label) for s in series]
        else:
            handles.append(Line2D([], [], color=series[0].colour, marker="o", lw=1.6,
                                  label="group: value and 95% interval"))
        if small_rows:
            handles.append(Line2D([], [], color=MUTED, marker="o", mfc="white", lw=0, label=small_note))
        if overall and any(o is not None for o in overall):
            handles.append(Line2D([], [], color=MUTED, lw=1.1, ls=(0, (4, 2)),
                                  label="everyone (grey band: 95% interval)"))
        fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 4))
        return _to_svg(fig, fig_id, title, desc)


def _det_styles(groups: list[dict]) -> list[tuple[str, object]]:
    """(colour, line style) per group. For two attributes (gender x race), colour tells one and
    line style the other, so a reader can follow either; otherwise both cycle together."""
    keys = {tuple(sorted(g)) for g in groups}
    if len(keys) == 1 and len(next(iter(keys))) == 2:
        a, b = next(iter(keys))
        values = {k: list(dict.fromkeys(str(g[k]) for g in groups)) for k in (a, b)}
        colour_key, style_key = sorted((a, b), key=lambda k: -len(values[k]))
        if len(values[colour_key]) <= len(PALETTE) and len(values[style_key]) <= len(LINESTYLES):
            return [(PALETTE[values[colour_key].index(str(g[colour_key]))],
                     LINESTYLES[values[style_key].index(str(g[style_key]))]) for g in groups]
    return [(PALETTE[i % len(PALETTE)], LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)])
            for i in range(len(groups))]


def det_plot(*, curves: list[tuple[str, dict, list[dict]]], marked_thresholds: list[float],
             title: str, desc: str, fig_id: str) -> Svg:
    """DET curves: missed match rate against false match rate (log axis), one line per group.

    ``curves`` holds (label, group, points); the overall curve (group {}) is drawn thick and
    black. Each curve carries markers at the thresholds in ``marked_thresholds``.
    """
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(10.5, 5.6), layout="constrained")
        ax = fig.add_subplot()
        all_fmr = [p["fmr"] for _, _, pts in curves for p in pts if p["fmr"] > 0]
        left = max(min(all_fmr), 1e-6) if all_fmr else 1e-4
        styles = iter(_det_styles([g for _, g, _ in curves if g]))
        handles = []
        for label, group, points in curves:
            pts = sorted((p for p in points if p["fmr"] > 0), key=lambda p: (p["fmr"], -p["fnmr"]))
            style: object
            if not group:
                colour, style, lw = INK, "-", 2.8
            else:
                (colour, style), lw = next(styles), 1.7
            if not pts:
                continue
            line, = ax.plot([p["fmr"] for p in pts], [p["fnmr"] for p in pts], color=colour,
                            ls=style, lw=lw, label=label, zorder=3 if not group else 2)
            handles.append(line)
            for t, marker in zip(marked_thresholds, MARKERS):
                near = min(points, key=lambda p: abs(p["threshold"] - t))
                if abs(near["threshold"] - t) <= 1.0 and near["fmr"] > 0:
                    ax.plot([near["fmr"]], [near["fnmr"]], marker=marker, ms=6.5, color=colour,
                            mec="white", mew=0.8, ls="none", zorder=4)
        for t, marker in zip(marked_thresholds, MARKERS):
            handles.append(Line2D([], [], marker=marker, color=MUTED, ls="none", ms=6.5,
                                  label=f"threshold {t:g}"))
        ax.set_xscale("log")
        ax.set_xlim(left * 0.8, 1.0)
        ax.xaxis.set_major_locator(LogLocator(base=10))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(_percent_tick))
        top = max([p["fnmr"] for _, _, pts in curves for p in pts if p["fmr"] >= left] + [0.01])
        ax.set_ylim(0, min(1.0, top * 1.05))
        ax.yaxis.set_major_formatter(FuncFormatter(_percent_tick))
        ax.set_xlabel("False match rate (log scale): different people wrongly matched")
        ax.set_ylabel("Missed match rate: same person not matched")
        ax.grid(which="major", color="#dddddd", lw=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        return _to_svg(fig, fig_id, title, desc)


def bar_plot(*, rows: list[tuple[str, list[int]]], series: list[str], xlabel: str, title: str, desc: str,
             fig_id: str) -> Svg:
    """Horizontal stacked bars of counts, one row per label (top first), one segment per series.

    Segments differ in hatching as well as colour, so print and colour-blind readers can tell them apart.
    """
    hatches = ["", "//", "..", "xx"]
    labels = [label for label, _ in rows]
    width = min(12.4, 3.2 + 0.07 * max([len(label) for label in labels] + [8]))
    height = 1.2 + 0.32 * max(len(rows), 1) + (0.3 if len(series) > 1 else 0)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        ax = fig.add_subplot()
        y = list(range(len(rows)))[::-1]
        left = [0] * len(rows)
        for si, name in enumerate(series):
            values = [counts[si] for _, counts in rows]
            ax.barh(y, values, left=left, color=PALETTE[si % len(PALETTE)], hatch=hatches[si % len(hatches)],
                    edgecolor="white", lw=0.6, label=name, height=0.62)
            left = [a + b for a, b in zip(left, values)]
        for yi, total in zip(y, left):
            ax.text(total, yi, f" {total}", va="center", ha="left", color=INK, fontsize=9)
        ax.set_yticks(y)
        ax.set_yticklabels(labels)
        ax.set_xlim(0, max(left + [1]) * 1.12)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
        ax.set_xlabel(xlabel)
        ax.tick_params(axis="y", length=0)
        ax.grid(axis="x", color="#dddddd", lw=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
        if len(series) > 1:
            fig.legend(loc="outside upper center", ncols=len(series))
        return _to_svg(fig, fig_id, title, desc)


_ID = re.compile(r'(\sid=")([^"]+)(")')
_URL = re.compile(r"url\(#([^)]+)\)")
_HREF = re.compile(r'((?:xlink:)?href=")#([^"]+)(")')


def _to_svg(fig: Figure, fig_id: str, title: str, desc: str) -> Svg:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue().decode("utf-8")
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.DOTALL)
    # Several SVGs share one HTML document: give every id this figure's prefix.
    text = _ID.sub(lambda m: f"{m[1]}{fig_id}-{m[2]}{m[3]}", text)
    text = _URL.sub(lambda m: f"url(#{fig_id}-{m[1]})", text)
    text = _HREF.sub(lambda m: f"{m[1]}#{fig_id}-{m[2]}{m[3]}", text)
    root = re.match(r"<svg\b[^>]*>", text)
    width = re.search(r'\swidth="([\d.]+)pt"', root.group(0)) if root else None
    height = re.search(r'\sheight="([\d.]+)pt"', root.group(0)) if root else None
    if root is None or width is None or height is None:
        raise ValueError("matplotlib wrote an SVG without a sized <svg> element")
    attrs = root.group(0)
    w = float(width.group(1)) * 4 / 3
    h = float(height.group(1)) * 4 / 3
    attrs = re.sub(r'\s(width|height)="[^"]*"', "", attrs)
    attrs = attrs[:-1] + (f' width="100%" style="max-width:{w:.0f}px;height:auto" role="img"'
                          f' aria-labelledby="{fig_id}-title {fig_id}-desc" focusable="false">')
    head = (f'<title id="{fig_id}-title">{_esc(title)}</title>'
            f'<desc id="{fig_id}-desc">{_esc(desc)}</desc>')
    text = attrs + head + text[root.end():]
    return Svg(text.strip(), w, h)


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


__all__ = ["MARKERS", "PALETTE", "Block", "Point", "Series", "Svg", "bar_plot", "det_plot", "dot_plot"]
