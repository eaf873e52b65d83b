"""Spatial transformer of the TSRN family: a small CNN predicts 20 control points and a thin-plate
spline (TPS) warps the LR image with them. It corrects the LR-HR misalignment of camera-zoom pairs
and runs in training only (``if self.stn and self.training`` in TSRN, TPGSR, TATT, TG and C3).

Layer facts (ORIGINALS.md §3.1): six conv3x3-BN-ReLU blocks (32, 64, 128, 256, 256, 256) with
max-pools (the last one (1, 2)), FC 512->512 with BN and ReLU, FC 512->2*20 initialised to zero
weights and control points at margin 0.01; the head's input to the last FC is scaled by 0.1. TPS
output 16x64, 20 control points, margins 0.05. With 4 input channels the head holds 1,855,048
parameters, with 3 channels 1,854,760.

Precision. The TPS is a linear solve: its inverse kernel holds entries up to ~87 whose products
cancel, and its sampling grid must be exact to a fraction of a pixel. Under bf16 autocast the two
matmuls that build the grid (``inverse_kernel @ points``, ``grid_repr @ mapping``) ran in bf16 and
the "identity" warp scrambled the image (~9 dB against the input), so every SR model trained on
scrambled inputs. The last FC (the control points: bf16 spacing near 1.0 is 1/256 of the width,
a quarter pixel at 64 columns), the TPS and the sampling therefore run in float32 outside
autocast, whatever the step's precision, as the originals ran them.

Initialisation (``init``): ``"original"`` sets the control points at margin 0.01 as the originals
do, which is not the identity: the TPS's targets sit at margin 0.05, so the first warps zoom the
image out slightly. ``"identity"`` sets them at the targets' margin 0.05, so the untrained STN maps
the image to itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TARGET_MARGINS = (0.05, 0.05)  # the TPS's target control points (ORIGINALS.md §3.1)
INITS = {"original": (0.01, 0.01), "identity": TARGET_MARGINS}  # the head's starting points


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


def _full_precision(device: torch.device):
    """A region where autocast is off on ``device`` (the TPS and the points stay in float32)."""
    return torch.autocast(device.type, enabled=False)


class TPS(nn.Module):
    """Thin-plate spline warp onto a fixed output grid from predicted source control points.

    The kernel is inverted once, in float64, and every product runs in float32 outside autocast.
    """

    def __init__(self, out_size=(16, 64), num_points: int = 20, margins=TARGET_MARGINS):
        super().__init__()
        self.out_size = out_size
        target = _control_points(num_points, *margins).double()
        n = num_points
        kernel = torch.zeros(n + 3, n + 3, dtype=torch.float64)
        kernel[:n, :n] = _tps_radial(target, target)
        kernel[:n, n] = 1
        kernel[n, :n] = 1
        kernel[:n, n + 1 :] = target
        kernel[n + 1 :, :n] = target.t()
        h, w = out_size
        ys, xs = torch.meshgrid(torch.linspace(0, 1, h, dtype=torch.float64),
                                torch.linspace(0, 1, w, dtype=torch.float64), indexing="ij")
        grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)  # (HW, 2) as (x, y)
        grid_repr = torch.cat([_tps_radial(grid, target), torch.ones(h * w, 1, dtype=grid.dtype),
                               grid], dim=1)
        self.register_buffer("inverse_kernel", torch.linalg.inv(kernel).float(), persistent=False)
        self.register_buffer("grid_repr", grid_repr.float(), persistent=False)

    def forward(self, image: torch.Tensor, source_points: torch.Tensor) -> torch.Tensor:
        b = source_points.shape[0]
        h, w = self.out_size
        with _full_precision(image.device):
            points = source_points.float()
            padded = torch.cat([points, points.new_zeros(b, 3, 2)], dim=1)
            mapping = self.inverse_kernel @ padded  # (B, N+3, 2)
            source = self.grid_repr @ mapping  # (B, HW, 2) in [0, 1]
            grid = source.view(b, h, w, 2).clamp(0, 1) * 2 - 1
            warped = F.grid_sample(image.float(), grid, align_corners=True)
        return warped.to(image.dtype)


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(True))


class STN(nn.Module):
    """STN head + TPS; call only in training (the models guard it with ``self.training``).

    ``init`` picks the head's starting control points (see the module docstring): ``"original"``
    (margin 0.01, the originals') or ``"identity"`` (margin 0.05, the TPS's own targets).
    """

    def __init__(self, in_channels: int = 3, out_size=(16, 64), num_points: int = 20,
                 init: str = "original"):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"unknown STN init {init!r}; known: {', '.join(INITS)}")
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
            self.fc2.bias.copy_(_control_points(num_points, *INITS[init]).reshape(-1))
        self.tps = TPS(out_size, num_points)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.convnet(image).flatten(1)
        if features.shape[1] != 512:
            raise ValueError(f"STN expects a 16x64 input, got {tuple(image.shape[-2:])}")
        hidden = 0.1 * self.fc1(features)
        with _full_precision(image.device):  # the control points in float32
            points = self.fc2(hidden.float()).view(-1, self.num_points, 2)
        return self.tps(image, points)


# --set stn=...: how a model builds its STN. False/True are the earlier boolean forms.
STN_MODES = ("none", "original", "identity")


def stn_mode(value) -> str:
    """Normalise a model's ``stn`` argument to one of STN_MODES."""
    if value is False or value is None:
        return "none"
    if value is True:
        return "original"
    if value not in STN_MODES:
        raise ValueError(f"unknown stn setting {value!r}; known: {', '.join(STN_MODES)}")
    return value


def build_stn(value, in_channels: int, out_size=(16, 64)) -> STN | None:
    """The STN for a model's ``stn`` argument, or None for ``"none"``."""
    mode = stn_mode(value)
    return None if mode == "none" else STN(in_channels, out_size, init=mode)
