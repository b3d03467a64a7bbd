"""Draw AutoHERI architectures.

``plot_architecture``: the towers as columns of layers, edges as arcs. Kept edges are solid,
their width growing with the edge probability (a fixed width when the architecture has no
search); candidates that were searched but not kept are faint dotted lines.
``plot_probabilities`` (and ``python -m models.autoheri.plot``): several searched runs' final
edge probabilities side by side, against the start and the threshold.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

from models.autoheri.architecture import Architecture


def plot_architecture(arch: Architecture, path: str) -> None:
    """Write the picture of ``arch`` to ``path`` (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    n_layers = len(arch.tower_units)
    column = {t: 2.2 * k for k, t in enumerate(arch.tasks)}
    fig, ax = plt.subplots(figsize=(2.6 + 2.4 * len(arch.tasks), 1.6 + 1.1 * (n_layers + 2)))

    def node(x, y, text, colour):
        ax.add_patch(FancyBboxPatch((x - 0.55, y - 0.22), 1.1, 0.44,
                                    boxstyle="round,pad=0.03", fc=colour, ec="k", lw=0.8,
                                    zorder=3))
        ax.text(x, y, text, ha="center", va="center", fontsize=8, zorder=4)

    width = 2.2 * (len(arch.tasks) - 1)
    node(width / 2, 0, "shared input layer", "#dddddd")
    for t, x in column.items():
        for j, units in enumerate(arch.tower_units):
            node(x, 1 + j, f"{t} h{j} ({units})", "#cfe2f3")
        node(x, 1 + n_layers, f"p({t})", "#f9cb9c")
    probs = arch.probabilities
    kept = {e.name for e in arch.kept}
    for k, e in enumerate(arch.candidates):
        p = None if probs is None else probs[k]
        is_kept = e.name in kept
        if not is_kept and p is None:
            continue
        start = (column[e.source] + 0.55, 1 + e.source_layer)
        end = (column[e.target] - 0.55, 1 + e.target_layer)
        span = (column[e.target] - column[e.source]) / 2.2
        style = dict(lw=0.6 + 3.4 * (p if p is not None else 0.6), color="tab:red", alpha=0.85
                     ) if is_kept else dict(lw=0.5, color="0.6", ls=":", alpha=0.7)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=8,
                                     connectionstyle=f"arc3,rad={-0.12 * span}", zorder=2,
                                     **style))
    ax.set_xlim(-1.0, width + 1.0)
    ax.set_ylim(-0.6, n_layers + 1.7)
    ax.axis("off")
    title = f"{arch.model}: {len(arch.kept)} of {len(arch.candidates)} candidate edges kept"
    if probs is not None:
        settings = arch.settings
        title += (f"\nsearch {settings.get('autoheri_search')}, derive "
                  f"{settings.get('autoheri_derive')}; line width ~ edge probability")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_probabilities(archs: Sequence[Architecture], labels: Sequence[str], path: str) -> None:
    """Each searched architecture's final edge probabilities per candidate (one marker row per
    architecture), the starting probability and the threshold as lines: did the search move
    the edges, and apart from each other?"""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    searched = [(a, l) for a, l in zip(archs, labels) if a.probabilities is not None]
    if not searched:
        raise ValueError("no architecture with searched probabilities")
    names = [e.name for e in searched[0][0].candidates]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(names) + 2), 4.2))
    for k, (arch, label) in enumerate(searched):
        if [e.name for e in arch.candidates] != names:
            raise ValueError(f"{label}: other candidate edges than {searched[0][1]}")
        kept = {e.name for e in arch.kept}
        xs = [i + 0.08 * (k - (len(searched) - 1) / 2) for i in range(len(names))]
        ax.scatter(xs, arch.probabilities, s=18, color=f"C{k}", label=label, zorder=3)
        ax.scatter([x for x, n in zip(xs, names) if n in kept],
                   [p for p, n in zip(arch.probabilities, names) if n in kept], s=70,
                   facecolors="none", edgecolors=f"C{k}", zorder=3)
    settings = searched[0][0].settings
    ax.axhline(settings.get("autoheri_edge_init", 0.5), color="k", ls="--", lw=0.8,
               label="start")
    if settings.get("autoheri_derive") == "threshold":
        ax.axhline(settings.get("autoheri_threshold", 0.5), color="tab:red", ls=":", lw=1.0,
                   label="threshold")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_ylabel("final edge probability (circled: kept)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    """CLI: ``python -m models.autoheri.plot --architectures A.json [B.json ...] --out PNG``
    draws the edge probabilities of several searched runs side by side."""
    import argparse
    import sys
    parser = argparse.ArgumentParser(prog="python -m models.autoheri.plot",
                                     description=main.__doc__.split("\n")[0])
    parser.add_argument("--architectures", nargs="+", required=True)
    parser.add_argument("--labels", nargs="+", default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    labels = args.labels or [os.path.basename(os.path.dirname(os.path.abspath(p)))
                             for p in args.architectures]
    if len(labels) != len(args.architectures):
        parser.error("one --labels entry per architecture")
    try:
        plot_probabilities([Architecture.load(p) for p in args.architectures], labels, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
