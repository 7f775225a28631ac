"""Genotypes: derivation from mixing weights (DARTS paper section 2.4), Katib's string form, JSON and a picture."""

from __future__ import annotations

import ast
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from katibx.nas._plotting import pyplot
from katibx.nas.search_space import NONE, SKIP, parse_primitive

log = logging.getLogger(__name__)
Node = list[tuple[str, int]]  # the (operation, input index) pairs feeding one intermediate node


@dataclass(frozen=True)
class Genotype:
    """A discrete architecture: per intermediate node its two (operation, input) pairs, for both cell types.

    Inputs 0 and 1 are the outputs of the two previous cells; input ``j >= 2`` is intermediate node ``j - 2``.
    """

    normal: list[Node]
    normal_concat: list[int]
    reduce: list[Node] = field(default_factory=list)
    reduce_concat: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        """Katib's form, ``Genotype(normal=[[('op', 0), ...], ...], normal_concat=[2, ...], ...)`` without spaces."""
        parts = [f"{name}={getattr(self, name)!r}" for name in ("normal", "normal_concat", "reduce", "reduce_concat")]
        return f"Genotype({','.join(parts)})".replace(" ", "")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: each node a list of ``[operation, input]`` pairs."""
        return {"normal": [[list(e) for e in n] for n in self.normal], "normal_concat": list(self.normal_concat),
                "reduce": [[list(e) for e in n] for n in self.reduce], "reduce_concat": list(self.reduce_concat)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Genotype":
        """Inverse of :meth:`to_dict`; ValueError naming the field on malformed input."""
        out: dict[str, Any] = {}
        for cell in ("normal", "reduce"):
            nodes = data.get(cell, [])
            if not isinstance(nodes, list):
                raise ValueError(f"genotype.{cell}: must be a list of nodes")
            parsed = []
            for i, node in enumerate(nodes):
                try:
                    parsed.append([(str(op), int(j)) for op, j in node])
                except (TypeError, ValueError):
                    raise ValueError(f"genotype.{cell}[{i}]: each node must be a list of [operation, input] pairs") from None
            out[cell] = parsed
            concat = data.get(f"{cell}_concat", list(range(2, 2 + len(parsed))))
            if isinstance(concat, range):
                concat = list(concat)
            if not isinstance(concat, list) or not all(isinstance(c, int) for c in concat):
                raise ValueError(f"genotype.{cell}_concat: must be a list of node indices")
            out[f"{cell}_concat"] = concat
        genotype = cls(**out)
        genotype.check()
        return genotype

    @classmethod
    def parse(cls, text: str) -> "Genotype":
        """Read Katib's ``Genotype(...)`` string (with or without spaces, ``range(...)`` allowed) or JSON."""
        text = text.strip()
        if text.startswith("{"):
            try:
                return cls.from_dict(json.loads(text))
            except json.JSONDecodeError as exc:
                raise ValueError(f"genotype: invalid JSON ({exc})") from None
        try:
            call = ast.parse(text, mode="eval").body
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Genotype"):
                raise ValueError
            values: dict[str, Any] = {}
            for kw in call.keywords:
                node = kw.value
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
                    values[str(kw.arg)] = list(range(*[ast.literal_eval(a) for a in node.args]))
                else:
                    values[str(kw.arg)] = ast.literal_eval(node)
        except (SyntaxError, ValueError):
            raise ValueError(f"genotype: expected Genotype(normal=[...], normal_concat=[...], reduce=[...], "
                             f"reduce_concat=[...]) or JSON, got {text[:80]!r}") from None
        # Katib's flat form (a list of pairs, two per node) is accepted too.
        for cell in ("normal", "reduce"):
            nodes = values.get(cell, [])
            if nodes and isinstance(nodes[0], tuple) and isinstance(nodes[0][0], str):
                values[cell] = [list(nodes[i:i + 2]) for i in range(0, len(nodes), 2)]
        return cls.from_dict(values)

    def check(self) -> None:
        """ValueError unless every node reads only earlier states through known operations other than none."""
        for cell in ("normal", "reduce"):
            nodes = getattr(self, cell)
            for i, node in enumerate(nodes):
                if not node:
                    raise ValueError(f"genotype.{cell}[{i}]: a node needs at least one input")
                for op, j in node:
                    try:
                        parse_primitive(op)
                    except ValueError as exc:
                        raise ValueError(f"genotype.{cell}[{i}]: {exc}") from None
                    if op == NONE:
                        raise ValueError(f"genotype.{cell}[{i}]: 'none' cannot be an edge of a discrete cell")
                    if not 0 <= j < i + 2:
                        raise ValueError(f"genotype.{cell}[{i}]: input {j} does not exist yet (inputs 0..{i + 1})")
            for c in getattr(self, f"{cell}_concat"):
                if not 0 <= c < len(nodes) + 2:
                    raise ValueError(f"genotype.{cell}_concat: {c} is not a state of the cell")

    def count(self, op: str, cell: str = "normal") -> int:
        """How many edges of ``cell`` use ``op``."""
        return sum(1 for node in getattr(self, cell) for name, _ in node if name == op)

    def save_json(self, path: Path) -> None:
        """Write the genotype as JSON (with its Katib string) to ``path``."""
        path.write_text(json.dumps({**self.to_dict(), "string": str(self)}, indent=2) + "\n")


def _derive_cell(weights: Sequence[Sequence[float]], primitives: Sequence[str], num_nodes: int,
                 banned: set[tuple[int, str]], k: int = 2) -> list[Node]:
    """Per node the ``k`` strongest incoming edges, each scored by its strongest allowed (non-none) operation."""
    nodes: list[Node] = []
    offset = 0
    for node in range(num_nodes):
        candidates = []  # (score, source, op)
        for source in range(node + 2):
            row = weights[offset + source]
            allowed = [(row[o], -o, name) for o, name in enumerate(primitives)
                       if name != NONE and (offset + source, name) not in banned]
            if allowed:
                score, _, name = max(allowed)  # ties: the lowest operation index
                candidates.append((score, -source, name))
        best = sorted(candidates, reverse=True)[:k]  # ties: the lowest input index
        nodes.append([(name, -neg_source) for _, neg_source, name in best])
        offset += node + 2
    return nodes


def _derive_capped(weights: Sequence[Sequence[float]], primitives: Sequence[str], num_nodes: int,
                   max_skip: int | None) -> list[Node]:
    """Derive a cell; with ``max_skip``, forbid skip on the weakest skip edges until at most that many remain."""
    banned: set[tuple[int, str]] = set()
    skip_index = list(primitives).index(SKIP) if SKIP in primitives else -1
    replaceable = any(p not in (NONE, SKIP) for p in primitives)  # another operation can take a skip's place
    while True:
        nodes = _derive_cell(weights, primitives, num_nodes, banned)
        offsets = [sum(i + 2 for i in range(n)) for n in range(num_nodes)]
        skips = [(weights[offsets[n] + source][skip_index], offsets[n] + source)
                 for n, node in enumerate(nodes) for op, source in node if op == SKIP]
        if max_skip is None or len(skips) <= max_skip or not replaceable:
            return nodes
        banned.add((min(skips)[1], SKIP))


def derive_genotype(normal: Sequence[Sequence[float]], reduce: Sequence[Sequence[float]] | None,
                    primitives: Sequence[str], num_nodes: int, max_skip: int | None = None) -> Genotype:
    """The paper's rule on softmax weights: two distinct inputs per node, never ``none``.

    ``max_skip`` (P-DARTS) caps skip_connection edges in the normal cell: the weakest extra ones are replaced by
    the next best choice. ``reduce`` None (a network without reduction cells) gives an empty reduction cell.
    """
    if NONE in primitives and len([p for p in primitives if p != NONE]) == 0:
        raise ValueError("the search space has no operation besides 'none'")
    concat = list(range(2, 2 + num_nodes))
    normal_cell = _derive_capped(normal, primitives, num_nodes, max_skip)
    if reduce is None:
        return Genotype(normal_cell, concat, [], [])
    return Genotype(normal_cell, concat, _derive_cell(reduce, primitives, num_nodes, set()), concat)


def plot_genotype(genotype: Genotype, path: Path) -> Path | None:
    """Draw the normal and reduction cells to ``path`` (PNG); None (and a log line) when matplotlib is missing."""
    plt = pyplot("genotype")
    if plt is None:
        return None
    cells = [("normal", genotype.normal, genotype.normal_concat)]
    if genotype.reduce:
        cells.append(("reduce", genotype.reduce, genotype.reduce_concat))
    fig, axes = plt.subplots(1, len(cells), figsize=(7 * len(cells), 4.5), squeeze=False)
    for ax, (title, nodes, concat) in zip(axes[0], cells):
        _draw_cell(ax, title, nodes, concat)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


_SHORT = {"separable_convolution": "sep", "dilated_convolution": "dil", "convolution": "conv", "avg_pooling": "avg pool",
          "max_pooling": "max pool", SKIP: "skip", NONE: "none"}


def short_name(op: str) -> str:
    """``separable_convolution_3x3`` -> ``sep 3x3`` (labels of the picture)."""
    prim = parse_primitive(op)
    return _SHORT[prim.kind] + (f" {prim.size}x{prim.size}" if prim.size else "")


def _draw_cell(ax: Any, title: str, nodes: list[Node], concat: list[int]) -> None:
    """One cell as a left-to-right DAG: inputs c_{k-2}, c_{k-1}, intermediate nodes, output c_{k}."""
    n = len(nodes)
    pos = {0: (0.0, 0.85), 1: (0.0, 0.15)}
    levels = (0.2, 0.8, 0.5, 0.05, 0.95, 0.35, 0.65)
    for i in range(n):
        pos[i + 2] = (1.0 + i, levels[i % len(levels)])
    out = (n + 1.0, 0.5)
    labels = {0: "c_{k-2}", 1: "c_{k-1}", **{i + 2: str(i) for i in range(n)}}
    arrow = dict(arrowstyle="->", color="0.3", shrinkA=12, shrinkB=12)
    for c in concat:
        ax.annotate("", xy=out, xytext=pos[c], arrowprops={**arrow, "color": "0.8"})
    for i, node in enumerate(nodes):
        for op, j in node:
            (x0, y0), (x1, y1) = pos[j], pos[i + 2]
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=arrow)
            t = 0.62  # nearer the target: edges into one node start from different places
            ax.text(x0 + t * (x1 - x0), y0 + t * (y1 - y0), short_name(op), fontsize=8, ha="center", va="center",
                    color="tab:blue", bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
    for key, (x, y) in pos.items():
        colour = "lightgreen" if key < 2 else "lightblue"
        ax.text(x, y, labels[key], ha="center", va="center", bbox=dict(boxstyle="round", fc=colour))
    ax.text(*out, "c_{k}", ha="center", va="center", bbox=dict(boxstyle="round", fc="khaki"))
    ax.set_xlim(-0.5, n + 1.5)
    ax.set_ylim(-0.1, 1.1)
    ax.set_title(f"{title} cell")
    ax.axis("off")
