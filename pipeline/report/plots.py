"""Metrics across versions as matplotlib PNGs (Agg backend: no display needed)."""

from __future__ import annotations

import io

from pipeline import status as st

COLUMNS = 3  # plots per row of one model's figure
PANEL_INCHES = (3.6, 2.6)
DPI = 90


def metric_names(versions: list[st.VersionStatus]) -> list[str]:
    """Every numeric blessing property any of the versions recorded, sorted."""
    return sorted({name for v in versions for name in v.metrics})


def metrics_png(model: str, versions: list[st.VersionStatus]) -> bytes | None:
    """One figure, a panel per metric over the model's pushed versions (oldest left); None when
    no version recorded a metric."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    versions = sorted((v for v in versions if v.metrics), key=lambda v: v.version)
    names = metric_names(versions)
    if not names:
        return None
    rows = -(-len(names) // COLUMNS)
    columns = min(COLUMNS, len(names))
    figure, axes = plt.subplots(
        rows, columns, squeeze=False,
        figsize=(PANEL_INCHES[0] * columns, PANEL_INCHES[1] * rows),
    )
    labels = [str(v.version) for v in versions]
    for index, name in enumerate(names):
        axis = axes[index // COLUMNS][index % COLUMNS]
        points = [(i, v.metrics[name]) for i, v in enumerate(versions) if name in v.metrics]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        axis.set_title(name, fontsize=9)
        axis.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7, ha="right")
        axis.tick_params(axis="y", labelsize=7)
        axis.grid(alpha=0.3)
    for index in range(len(names), rows * columns):
        axes[index // COLUMNS][index % COLUMNS].axis("off")
    figure.suptitle(f"{model}: metrics by pushed version", fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (PANEL_INCHES[1] * rows)))  # room for the title
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    plt.close(figure)
    return buffer.getvalue()
