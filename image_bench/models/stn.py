"""Spatial transformer of the TSRN family: a small CNN predicts 20 control points and a thin-plate
spline (TPS) warps the LR image with them. It corrects the LR-HR misalignment of camera-zoom pairs
and runs in training only (``if self.stn and self.training`` in TSRN, TPGSR, TATT, TG and C3).

Layer facts (ORIGINALS.md §3.1): six conv3x3-BN-ReLU blocks (32, 64, 128, 256, 256, 256) with
max-pools (the last one (1, 2)), FC 512->512 with BN and ReLU, FC 512->2*20 initialised to zero
weights and identity control points (margin 0.01); the head's input to the last FC is scaled by
0.1. TPS output 16x64, 20 control points, margins 0.05. With 4 input channels the head holds
1,855,048 parameters, with 3 channels 1,854,760.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _control_points(num_points: int, margin_x: float, margin_y: float) -> torch.Tensor:
    """Control points on the top and bottom edges, in [0, 1] image coordinates, (num_points, 2)."""
    half = num_points // 2
    xs = torch.linspace(margin_x, 1.0 - margin_x, half)
    top = torch.stack([xs, torch.full_like(xs, margin_y)], dim=1)
    bottom = torch.stack([xs, torch.full_like(xs, 1.0 - margin_y)], dim=1)
    return torch.cat([top, bottom], dim=0)


def _tps_radial(points: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
    """U(r) = r^2 log r (written 0.5 r^2 log r^2) between every point and every control point."""
    sq = (points[:, None, :] - controls[None, :, :]).pow(2).sum(-1)
    return torch.nan_to_num(0.5 * sq * torch.log(sq), nan=0.0)


class TPS(nn.Module):
    """Thin-plate spline warp onto a fixed output grid from predicted source control points."""

    def __init__(self, out_size=(16, 64), num_points: int = 20, margins=(0.05, 0.05)):
        super().__init__()
        self.out_size = out_size
        target = _control_points(num_points, *margins)
        n = num_points
        kernel = torch.zeros(n + 3, n + 3)
        kernel[:n, :n] = _tps_radial(target, target)
        kernel[:n, n] = 1
        kernel[n, :n] = 1
        kernel[:n, n + 1 :] = target
        kernel[n + 1 :, :n] = target.t()
        h, w = out_size
        ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)  # (HW, 2) as (x, y)
        grid_repr = torch.cat([_tps_radial(grid, target), torch.ones(h * w, 1), grid], dim=1)
        self.register_buffer("inverse_kernel", torch.linalg.inv(kernel), persistent=False)
        self.register_buffer("grid_repr", grid_repr, persistent=False)

    def forward(self, image: torch.Tensor, source_points: torch.Tensor) -> torch.Tensor:
        b = source_points.shape[0]
        padded = torch.cat([source_points, source_points.new_zeros(b, 3, 2)], dim=1)
        mapping = self.inverse_kernel.to(padded.dtype) @ padded  # (B, N+3, 2)
        source = self.grid_repr.to(padded.dtype) @ mapping  # (B, HW, 2) in [0, 1]
        h, w = self.out_size
        grid = source.view(b, h, w, 2).clamp(0, 1) * 2 - 1
        return F.grid_sample(image, grid.to(image.dtype), align_corners=True)


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(True))


class STN(nn.Module):
    """STN head + TPS; call only in training (the models guard it with ``self.training``)."""

    def __init__(self, in_channels: int = 3, out_size=(16, 64), num_points: int = 20):
        super().__init__()
        self.num_points = num_points
        widths = (32, 64, 128, 256, 256, 256)
        layers: list[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate(widths):
            layers.append(_conv_block(cin, cout))
            if i < 4:
                layers.append(nn.MaxPool2d(2, 2))
            elif i == 4:
                layers.append(nn.MaxPool2d((1, 2), (1, 2)))
            cin = cout
        self.convnet = nn.Sequential(*layers)
        self.fc1 = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(True))
        self.fc2 = nn.Linear(512, num_points * 2)
        nn.init.zeros_(self.fc2.weight)
        with torch.no_grad():
            self.fc2.bias.copy_(_control_points(num_points, 0.01, 0.01).reshape(-1))
        self.tps = TPS(out_size, num_points)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.convnet(image).flatten(1)
        if features.shape[1] != 512:
            raise ValueError(f"STN expects a 16x64 input, got {tuple(image.shape[-2:])}")
        points = self.fc2(0.1 * self.fc1(features)).view(-1, self.num_points, 2)
        return self.tps(image, points)
