"""Sequential-recurrent blocks (SRB) of the TSRN family, shared by TG, TPGSR, C3-STISR and IMAGE.

Facts from TextZoom's TSRN (ORIGINALS.md §3.1): each SRB computes a convolutional residual
conv3x3-BN-Mish-conv3x3-BN, runs it through a GRU block whose sequences go along the height,
adds it to the input and runs the sum through a second GRU block along the width. A GRU block is
a 1x1 convolution followed by a bidirectional GRU with half as many hidden units per direction.
Clue-guided SRBs (TPGSR, C3-STISR, IMAGE Eq. 1) concatenate the clue to the residual at the
channel dimension before the first GRU block, whose 1x1 convolution then maps C + C_clue -> C.
"""

from __future__ import annotations

import torch
from torch import nn


class GruBlock(nn.Module):
    """1x1 conv, then a BiGRU over the last (width) axis of an NCHW map."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        if channels % 2:
            raise ValueError("GruBlock needs an even channel count (two GRU directions)")
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=1)
        self.gru = nn.GRU(channels, channels // 2, bidirectional=True, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        b, c, h, w = x.shape
        seq = x.permute(0, 2, 3, 1).reshape(b * h, w, c)  # one sequence per row, along the width
        seq, _ = self.gru(seq)
        return seq.reshape(b, h, w, c).permute(0, 3, 1, 2)


class SRB(nn.Module):
    """One sequential-recurrent block; with ``clue_channels`` > 0 it is clue-guided (Eq. 1)."""

    def __init__(self, channels: int = 64, clue_channels: int = 0):
        super().__init__()
        self.clue_channels = clue_channels
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act = nn.Mish()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.gru1 = GruBlock(channels + clue_channels, channels)  # along the height
        self.gru2 = GruBlock(channels, channels)  # along the width

    def forward(self, x: torch.Tensor, clue: torch.Tensor | None = None) -> torch.Tensor:
        residual = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
        if self.clue_channels:
            if clue is None:
                raise ValueError("this SRB is clue-guided and needs a clue map")
            residual = torch.cat([residual, clue], dim=1)
        residual = self.gru1(residual.transpose(-1, -2)).transpose(-1, -2)
        return self.gru2(x + residual)
