"""CRNN (Shi et al., TPAMI 2016), in the layout of meijieru/crnn.pytorch.

The IMAGE paper's cost setting (RECOGNIZERS.md §1a): 3-channel 32x128 input, no convolution bias
where batch norm follows (as PARSeq's hub CRNN, whose 8,360,927 parameters with a 95-class head
are the paper's 8.36M), and here the suite's 37-class head (36 symbols + blank), which leaves
8,331,173 parameters. Seven convolutions 64-128-256-256-512-512-512 (BN after conv 2, 4 and 6),
pools 2x2, 2x2, (2,2)/(2,1)/(0,1) twice, so a 32x128 input becomes 512x1x33: T = 33 frames.
Then two bidirectional LSTMs with 256 hidden units, each followed by a linear layer.
"""

from __future__ import annotations

import torch
from torch import nn

from image_bench import charset
from image_bench.models.base import ModelOutput, register
from image_bench.models.recognizer import Recognizer


class BidirectionalLSTM(nn.Module):
    def __init__(self, in_features: int, hidden: int, out_features: int):
        super().__init__()
        self.rnn = nn.LSTM(in_features, hidden, bidirectional=True, batch_first=True)
        self.embedding = nn.Linear(hidden * 2, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.embedding(out)


def _conv(cin: int, cout: int, kernel: int, padding: int, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, 1, padding, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    return layers + [nn.ReLU(True)]


@register("crnn")
class CRNN(Recognizer):
    def __init__(self, in_channels: int = 3, hidden: int = 256,
                 num_classes: int = charset.NUM_CLASSES, lr_fraction: float = 0.0,
                 channels: tuple[int, ...] = (64, 128, 256, 256, 512, 512, 512)):
        super().__init__(lr_fraction)
        if len(channels) != 7:
            raise ValueError(f"CRNN has seven convolutions, got {len(channels)} channel counts")
        c = channels  # the default is the original; narrower ones only for fast CPU tests
        tall_pool = dict(kernel_size=(2, 2), stride=(2, 1), padding=(0, 1))
        self.cnn = nn.Sequential(
            *_conv(in_channels, c[0], 3, 1, False), nn.MaxPool2d(2, 2),
            *_conv(c[0], c[1], 3, 1, False), nn.MaxPool2d(2, 2),
            *_conv(c[1], c[2], 3, 1, True),
            *_conv(c[2], c[3], 3, 1, False), nn.MaxPool2d(**tall_pool),
            *_conv(c[3], c[4], 3, 1, True),
            *_conv(c[4], c[5], 3, 1, False), nn.MaxPool2d(**tall_pool),
            *_conv(c[5], c[6], 2, 0, True),
        )
        self.rnn = nn.Sequential(
            BidirectionalLSTM(c[6], hidden, hidden),
            BidirectionalLSTM(hidden, hidden, num_classes),
        )

    def forward(self, images: torch.Tensor) -> ModelOutput:
        features = self.cnn(images)
        if features.shape[2] != 1:
            raise ValueError(f"CRNN needs 32-pixel-high input, got {tuple(images.shape[-2:])}")
        frames = features.squeeze(2).transpose(1, 2)  # (B, T, 512)
        return ModelOutput(logits=self.rnn(frames))
