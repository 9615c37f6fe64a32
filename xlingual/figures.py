"""Figures: heatmaps of tables, learning curves, the layer sweep; every PNG written atomically.

The functions take plain data (a report.Table or lists of points), so reports of any kind can draw with them.
"""

from __future__ import annotations

from pathlib import Path

from .fileio import atomic_path

MISSING = "—"  # a cell without a value


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap(table, path: Path, colorbar: str, cmap: str = "viridis_r", diverging: bool = False) -> None:
    """A report.Table's numeric grid as a heatmap PNG, values written in the cells, marked cells outlined.

    colorbar: the colorbar's label, saying what the color is and which way is better ("test WER (%): lower is
    better"); required, since a color scale alone does not say whether dark is good.
    """
    import numpy as np

    plt = _pyplot()
    ncols = len(table.values[0]) if table.values else 0
    data = np.array([[np.nan if v is None else v for v in row] for row in table.values], dtype=float)
    fig, ax = plt.subplots(figsize=(1.3 * ncols + 2.5, 0.8 * len(table.rows) + 1.8))
    kw = {}
    if diverging and np.isfinite(data).any():
        lim = float(np.nanmax(np.abs(data))) or 1.0
        kw = {"vmin": -lim, "vmax": lim}
    im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, aspect="auto", **kw)
    ax.set_xticks(range(ncols), table.columns[:ncols], rotation=30, ha="right")
    ax.set_yticks(range(len(table.rows)), table.rows)
    ax.set_xlabel(table.corner.split("\\")[-1].strip())
    ax.set_ylabel(table.corner.split("\\")[0].strip())
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            text = MISSING if np.isnan(data[i, j]) else table.fmt.format(data[i, j])
            ax.text(j, i, text, ha="center", va="center", color="white" if not np.isnan(data[i, j]) else "gray",
                    fontsize=9, fontweight="bold" if (i, j) in table.marked else "normal",
                    path_effects=_outline())
            if (i, j) in table.marked:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    fig.colorbar(im, ax=ax, label=colorbar)
    ax.set_title(table.title)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure as PNG atomically (a kill leaves the old figure or the new one), then close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        _pyplot().close(fig)


def _outline():
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=2, foreground="black")]


def sweep_plot(table, path: Path) -> None:
    """Test WER against k per (source, target) row of the layer-sweep table; dotted: the target from scratch."""
    plt = _pyplot()
    ks = [int(c.split("=")[1]) for c in table.columns if c.startswith("k=")]
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, row in zip(table.rows, table.values):
        pts = [(k, v) for k, v in zip(ks, row) if v is not None]
        if pts:
            line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
            if row[-1] is not None:  # the target's from-scratch WER for reference
                ax.axhline(row[-1], color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_xticks(ks)
    ax.set_xlabel("transferred bottom conformer layers k")
    ax.set_ylabel("test WER (%)")
    ax.set_title("Layer transferability (dotted: no pre-training)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------------


def curves_plot(series: list[tuple[str, list[tuple[int, float]], bool]], path: Path, title: str) -> None:
    """(legend label, [(step, dev WER)], dashed) per series: dev WER against training steps."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts, dashed in series:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, linestyle="--" if dashed else "-",
                label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("dev WER (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
