"""The DARTS supernet: every edge of every cell is a softmax-weighted mixture of all candidate operations."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from katibx.nas.genotype import Genotype, derive_genotype
from katibx.nas.operations import Preprocess, build_operation
from katibx.nas.search_space import parse_primitive, reduction_layers, with_none


class MixedOp(nn.Module):
    """sum_o softmax(alpha)_o * o(x) over the candidate operations of one edge."""

    def __init__(self, primitives: list[str], channels: int, stride: int) -> None:
        super().__init__()
        ops = []
        for name in primitives:
            op = build_operation(name, channels, stride, affine=False, track=False)
            if parse_primitive(name).kind in ("avg_pooling", "max_pooling"):  # as the reference: BN after pooling
                op = nn.Sequential(op, nn.BatchNorm2d(channels, affine=False, track_running_stats=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops))  # type: ignore[return-value]


class SearchCell(nn.Module):
    """A cell of ``num_nodes`` intermediate nodes; node i mixes all of cell inputs 0, 1 and nodes before it."""

    def __init__(self, primitives: list[str], num_nodes: int, c_pp: int, c_p: int, c: int,
                 reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.num_nodes = num_nodes
        self.pre0 = Preprocess(c_pp, c, reduction_prev, affine=False, track=False)
        self.pre1 = Preprocess(c_p, c, False, affine=False, track=False)
        self.edges = nn.ModuleList()
        for node in range(num_nodes):
            for source in range(node + 2):
                stride = 2 if reduction and source < 2 else 1
                self.edges.append(MixedOp(primitives, c, stride))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        offset = 0
        for _ in range(self.num_nodes):
            node = sum(self.edges[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(node)  # type: ignore[arg-type]
        return torch.cat(states[2:], dim=1)


def num_edges(num_nodes: int) -> int:
    """Mixed edges in a cell: node i has i + 2 inputs."""
    return sum(i + 2 for i in range(num_nodes))


class SearchNetwork(nn.Module):
    """Stem, ``num_layers`` search cells (reductions at Katib's positions), global pooling and a classifier.

    The architecture parameters (``alpha_normal``, ``alpha_reduce``) are kept apart from the weights:
    :meth:`weights` never yields them, so the weight optimiser cannot move them.
    """

    def __init__(self, primitives: list[str], num_layers: int, init_channels: int, num_classes: int,
                 num_nodes: int = 4, stem_multiplier: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        self.primitives = with_none(primitives)
        self.num_nodes = num_nodes
        self.reductions = reduction_layers(num_layers)
        c_stem = stem_multiplier * init_channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c_stem, track_running_stats=False))
        c_pp, c_p, c = c_stem, c_stem, init_channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(num_layers):
            reduction = i in self.reductions
            if reduction:
                c *= 2
            self.cells.append(SearchCell(self.primitives, num_nodes, c_pp, c_p, c, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, num_nodes * c
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        shape = (num_edges(num_nodes), len(self.primitives))
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(shape))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w_normal = torch.softmax(self.alpha_normal, dim=-1)
        w_reduce = torch.softmax(self.alpha_reduce, dim=-1)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, w_reduce if cell.reduction else w_normal)
        return self.classifier(self.pool(s1).flatten(1))

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture parameters alpha (only their own optimiser may update them)."""
        return [self.alpha_normal, self.alpha_reduce] if self.reductions else [self.alpha_normal]

    def named_weights(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) for every network weight, never an alpha."""
        for name, p in self.named_parameters():
            if not name.startswith("alpha_"):
                yield name, p

    def weights(self) -> list[nn.Parameter]:
        """Every network weight, never an alpha."""
        return [p for _, p in self.named_weights()]

    def genotype(self, max_skip: int | None = None) -> Genotype:
        """The discrete cells the current alphas select (see :func:`nas.genotype.derive_genotype`)."""
        normal = torch.softmax(self.alpha_normal.detach().float(), dim=-1).cpu().tolist()
        reduce = torch.softmax(self.alpha_reduce.detach().float(), dim=-1).cpu().tolist() if self.reductions else None
        return derive_genotype(normal, reduce, self.primitives, self.num_nodes, max_skip=max_skip)
