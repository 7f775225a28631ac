"""A picture of an ENAS architecture (``architecture.png`` beside ``architecture.json``): the layers left to right,
each with its operation, the chain from the input to the classifier, and the skip connections as arcs above."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from katibx.nas._plotting import pyplot

_KIND = {"convolution": "conv", "separable_convolution": "sep conv", "depthwise_convolution": "depthwise conv"}


def operation_label(operation: dict[str, Any]) -> str:
    """``{"opt_type": "separable_convolution", "opt_params": {...}}`` -> ``sep conv 3x3\\n96 filters, x2, /2``."""
    kind, params = str(operation.get("opt_type")), {k: str(v) for k, v in (operation.get("opt_params") or {}).items()}
    if kind == "reduction":
        pooling = params.get("reduction_type", "max_pooling").replace("_pooling", " pool")
        size = params.get("pool_size", "2")
        return f"{pooling}\n{size}x{size}"
    size = params.get("filter_size", "3")
    details = [f"{params['num_filter']} filters"] if "num_filter" in params else []
    if params.get("depth_multiplier", "1") != "1":
        details.append(f"x{params['depth_multiplier']}")
    if params.get("stride", "1") != "1":
        details.append(f"stride {params['stride']}")
    return f"{_KIND.get(kind, kind)} {size}x{size}" + ("\n" + ", ".join(details) if details else "")


def plot_architecture(layers: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Draw the layers of ``architecture.json`` (each ``{"layer", "operation", "skips_from"}``) to ``path`` (PNG);
    None (and a log line) when matplotlib is missing."""
    plt = pyplot("architecture")
    if plt is None:
        return None
    count = len(layers)
    fig, ax = plt.subplots(figsize=(2.0 * (count + 2), 3.6))
    names = ["input"] + [f"layer {i}" for i in range(count)]
    arrow = dict(arrowstyle="->", color="0.3", shrinkA=28, shrinkB=28)
    for x in range(count + 1):
        ax.annotate("", xy=(x + 1, 0), xytext=(x, 0), arrowprops=arrow)
    top = 0.3
    for i, layer in enumerate(layers):
        for source in layer.get("skips_from") or []:
            start, end = names.index(source), i + 1
            height = 0.15 + 0.1 * (end - start)  # longer skips arc higher, so they do not overlap
            top = max(top, height + 0.25)
            xs = [start + (end - start) * k / 40 for k in range(41)]
            ys = [0.12 + height * 4 * (x - start) * (end - x) / (end - start) ** 2 for x in xs]
            ax.plot(xs[:-2], ys[:-2], color="tab:orange", lw=1)
            ax.annotate("", xy=(xs[-1], ys[-1]), xytext=(xs[-3], ys[-3]),
                        arrowprops=dict(arrowstyle="->", color="tab:orange"))
    box = dict(boxstyle="round,pad=0.4")
    ax.text(0, 0, "input", ha="center", va="center", bbox={**box, "fc": "lightgreen"})
    for i, layer in enumerate(layers):
        ax.text(i + 1, 0, f"layer {i}\n{operation_label(layer.get('operation') or {})}", ha="center", va="center",
                fontsize=8, bbox={**box, "fc": "lightblue"})
    ax.text(count + 1, 0, "global pool\n+ linear", ha="center", va="center", fontsize=8, bbox={**box, "fc": "khaki"})
    ax.set_xlim(-0.6, count + 1.6)
    ax.set_ylim(-0.4, top)
    ax.set_title(title or "ENAS architecture (orange: skip connections)")
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["operation_label", "plot_architecture"]
