"""DARTS candidate operations (ReLU-Conv-BN order) built from Katib's primitive names."""

from __future__ import annotations

import torch
from torch import nn

from katibx.nas.search_space import NONE, SKIP, parse_primitive


class Zero(nn.Module):
    """The ``none`` operation: zeros of the output shape (strided at stride 2)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x * 0.0
        return x[:, :, :: self.stride, :: self.stride] * 0.0


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1x1 stride-2 convolutions (skip_connection at stride 2)."""

    def __init__(self, c_in: int, c_out: int, affine: bool, track: bool) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = nn.functional.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))  # odd sizes: keep both paths the same shape
        return self.bn(torch.cat([self.conv1(x), self.conv2(shifted)], dim=1))


def relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool, track: bool,
                 dilation: int = 1, groups: int = 1) -> list[nn.Module]:
    """ReLU, convolution, batch norm as a list of layers."""
    return [nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track)]


def dil_conv(c_in: int, c_out: int, k: int, stride: int, dilation: int, affine: bool, track: bool) -> nn.Sequential:
    """Depthwise k x k (dilated) convolution then pointwise, with ReLU before and BN after."""
    pad = dilation * (k - 1) // 2
    return nn.Sequential(
        nn.ReLU(),
        nn.Conv2d(c_in, c_in, k, stride, pad, dilation=dilation, groups=c_in, bias=False),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track),
    )


def build_operation(name: str, channels: int, stride: int, affine: bool, track: bool = True) -> nn.Module:
    """One operation on ``channels`` channels; ``affine``/``track`` set its batch norms (search: off)."""
    prim = parse_primitive(name)
    k = prim.size
    if name == NONE:
        return Zero(stride)
    if name == SKIP:
        return nn.Identity() if stride == 1 else FactorizedReduce(channels, channels, affine, track)
    if prim.kind == "separable_convolution":  # applied twice, as in the paper
        return nn.Sequential(dil_conv(channels, channels, k, stride, 1, affine, track),
                             dil_conv(channels, channels, k, 1, 1, affine, track))
    if prim.kind == "dilated_convolution":
        return dil_conv(channels, channels, k, stride, 2, affine, track)
    if prim.kind == "convolution":
        return nn.Sequential(*relu_conv_bn(channels, channels, k, stride, k // 2, affine, track))
    pool: nn.Module = (nn.AvgPool2d(k, stride, k // 2, count_include_pad=False) if prim.kind == "avg_pooling"
                       else nn.MaxPool2d(k, stride, k // 2))
    return pool


class Preprocess(nn.Sequential):
    """Bring a cell input to ``c_out`` channels: 1x1 ReLU-Conv-BN, or FactorizedReduce after a resolution drop."""

    def __init__(self, c_in: int, c_out: int, reduce: bool, affine: bool, track: bool) -> None:
        if reduce:
            super().__init__(FactorizedReduce(c_in, c_out, affine, track))
        else:
            super().__init__(*relu_conv_bn(c_in, c_out, 1, 1, 0, affine, track))
