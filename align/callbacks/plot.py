"""The likelihood-drift figure: chosen/rejected drift, margin and displacement rate over steps."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DRIFT_PANELS", "plot_drift"]

# (title, [(metric, label)]) per panel; metrics are drift_metrics() keys
DRIFT_PANELS = (
    ("log-prob change per token since step 0", [("chosen_change_per_token", "chosen"), ("rejected_change_per_token", "rejected")]),
    ("margin log π(y_w) − log π(y_l)", [("margin", "margin")]),
    ("displacement rate (chosen log-prob fell)", [("displacement_rate", "displaced")]),
)


def plot_drift(series: dict[str, list[dict]], path: str | Path | None = None, *, x_label: str = "step", x_key: str = "step"):
    """Draw one line per run (``series``: run name -> records with ``x_key`` and the metrics) in
    each of :data:`DRIFT_PANELS`; write a PNG atomically to ``path`` when given. Returns the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(DRIFT_PANELS), figsize=(5 * len(DRIFT_PANELS), 3.8), squeeze=False)
    for ax, (title, metrics) in zip(axes[0], DRIFT_PANELS):
        for run, records in series.items():
            for metric, label in metrics:
                points = [(r[x_key], r[metric]) for r in records if metric in r]
                if points:
                    xs, ys = zip(*points)
                    name = label if len(series) == 1 else f"{run} {label}" if len(metrics) > 1 else run
                    style = "--" if label == "rejected" else "-"
                    ax.plot(xs, ys, style, marker="o", markersize=3, label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(x_label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and checkpoint indices are whole
        ax.axhline(0.0, color="grey", linewidth=0.5)
        ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    plt.close(fig)
    return fig
