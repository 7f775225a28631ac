"""The discrete network a genotype describes, trained from scratch to evaluate the genotype."""

from __future__ import annotations

import torch
from torch import nn

from katibx.nas.genotype import Genotype, Node
from katibx.nas.operations import Preprocess, build_operation
from katibx.nas.search_space import reduction_layers


class EvalCell(nn.Module):
    """A cell with exactly the genotype's edges; its output concatenates the ``concat`` states."""

    def __init__(self, nodes: list[Node], concat: list[int], c_pp: int, c_p: int, c: int,
                 reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.pre0 = Preprocess(c_pp, c, reduction_prev, affine=True, track=True)
        self.pre1 = Preprocess(c_p, c, False, affine=True, track=True)
        self.nodes = [[source for _, source in node] for node in nodes]
        self.ops = nn.ModuleList(
            nn.ModuleList(build_operation(op, c, 2 if reduction and source < 2 else 1, affine=True) for op, source in node)
            for node in nodes
        )
        self.concat = list(concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for sources, ops in zip(self.nodes, self.ops):
            states.append(sum(op(states[j]) for j, op in zip(sources, ops)))  # type: ignore[arg-type, call-overload]
        return torch.cat([states[i] for i in self.concat], dim=1)


class EvalNetwork(nn.Module):
    """Stem, ``num_layers`` cells from the genotype (reductions at Katib's positions), pooling, classifier."""

    def __init__(self, genotype: Genotype, num_layers: int, init_channels: int, num_classes: int,
                 stem_multiplier: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        genotype.check()
        reductions = reduction_layers(num_layers)
        if reductions and not genotype.reduce:
            raise ValueError(f"genotype.reduce: a {num_layers}-layer network has reduction cells but the genotype "
                             "has no reduction cell (searched with 1 layer?); use num_layers=1")
        c_stem = stem_multiplier * init_channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
        c_pp, c_p, c = c_stem, c_stem, init_channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(num_layers):
            reduction = i in reductions
            if reduction:
                c *= 2
            nodes, concat = (genotype.reduce, genotype.reduce_concat) if reduction else (genotype.normal, genotype.normal_concat)
            self.cells.append(EvalCell(nodes, concat, c_pp, c_p, c, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, len(concat) * c
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.pool(s1).flatten(1))
