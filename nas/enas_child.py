"""The child network of an ENAS architecture (Katib's macro search space) in PyTorch: one operation per layer, each
layer reading the previous layer plus what its skip bits name, as Katib's trial reads them (bit 0: the input, bit
j: layer j-1's output; resized to the previous layer's size, projected to its channels and added), then global
pooling and a linear classifier."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional


def _conv_block(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU())


def operation(spec: dict[str, Any], in_channels: int) -> tuple[nn.Module, int]:
    """The module of one embedding entry (``opt_type`` + ``opt_params`` as Katib writes them) and its output
    channels. ``convolution``: k x k conv; ``separable_convolution``: depthwise then pointwise; ``depthwise_
    convolution``: depthwise with a channel multiplier; ``reduction``: max or average pooling."""
    kind, params = spec["opt_type"], {k: str(v) for k, v in (spec.get("opt_params") or {}).items()}
    size = int(float(params.get("filter_size", "3")))
    stride = int(float(params.get("stride", "1")))
    padding = size // 2
    if kind == "convolution":
        out = int(float(params.get("num_filter", str(in_channels))))
        return _conv_block(nn.Conv2d(in_channels, out, size, stride, padding, bias=False), out), out
    if kind in ("separable_convolution", "depthwise_convolution"):
        middle = in_channels * int(float(params.get("depth_multiplier", "1")))
        depthwise = nn.Conv2d(in_channels, middle, size, stride, padding, groups=in_channels, bias=False)
        if kind == "depthwise_convolution":
            return _conv_block(depthwise, middle), middle
        out = int(float(params.get("num_filter", str(in_channels))))
        return _conv_block(nn.Sequential(depthwise, nn.Conv2d(middle, out, 1, bias=False)), out), out
    if kind == "reduction":
        pool = int(float(params.get("pool_size", "2")))
        kind_of = params.get("reduction_type", "max_pooling")
        layer = nn.MaxPool2d(pool, pool, ceil_mode=True) if kind_of == "max_pooling" else \
            nn.AvgPool2d(pool, pool, ceil_mode=True)
        return layer, in_channels
    raise ValueError(f"operation type {kind!r} is not an enas operation")


class ChildNetwork(nn.Module):
    """The network an architecture describes, for inputs of ``input_sizes`` = [height, width, channels]."""

    def __init__(self, architecture: list[list[int]], nn_config: dict[str, Any]) -> None:
        super().__init__()
        height, width, channels = (list(nn_config["input_sizes"]) + [1, 1, 1])[:3]
        embedding = nn_config["embedding"]
        self.skips = [row[1:] for row in architecture]
        self.layers = nn.ModuleList()
        self.projections = nn.ModuleDict()
        widths = [int(channels)]
        for i, row in enumerate(architecture):
            module, out = operation(embedding[str(row[0])], widths[-1])
            self.layers.append(module)
            for j, bit in enumerate(row[1:]):
                if bit:  # slot j (0: the input, else layer j-1) joins layer i's input, projected to its channels
                    self.projections[f"{j}_{i}"] = nn.Conv2d(widths[j], widths[-1], 1, bias=False)
            widths.append(out)
        self.classifier = nn.Linear(widths[-1], int(nn_config["output_sizes"][-1]))
        self.input_shape = (int(channels), int(height), int(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]  # as Katib's trial reads the skip bits: slot 0 is the input, slot j the output of layer j-1
        for i, layer in enumerate(self.layers):
            for j, bit in enumerate(self.skips[i]):
                if bit:
                    earlier = functional.adaptive_avg_pool2d(outputs[j], x.shape[-2:])
                    x = x + self.projections[f"{j}_{i}"](earlier)
            if min(x.shape[-2:]) > 1 or not isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
                x = layer(x)  # (a 1x1 map has nothing left to pool)
            outputs.append(x)
        return self.classifier(functional.adaptive_avg_pool2d(x, 1).flatten(1))


__all__ = ["ChildNetwork", "operation"]
