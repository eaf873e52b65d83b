"""IMAGE's two models on two CUDA streams in training (issue 7).

With detached clues (IMAGE's default: "the two models are optimized separately", Sec. 1) the SR
model phi and the recognizer varphi hand each other only tensors that carry no gradient, so their
backward graphs share no node. Running phi's operations on a side stream and varphi's on the
current one lets the GPU overlap them: phi's convolutions, BatchNorms, pixel shuffles and GRU
recurrences run at 16x64 and leave SMs idle while the recognizer's products wait behind them on
one stream. The autograd engine runs each backward operation on the stream of its forward one and
fences the streams where a gradient crosses, so the backward overlaps the same way; a CUDA-graph
capture records the two streams as two branches of the graph.

What this module adds are the hand-overs: a tensor one stream makes and the other reads is fenced
by an event, and recorded on the reader's stream (``record_stream``) so that the caching allocator
does not give its memory to the maker while the reader may still run.
"""

from __future__ import annotations

import contextlib

import torch

_SIDE_STREAMS: dict[int, torch.cuda.Stream] = {}


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    """One side stream per device for the whole process: a CUDA-graph capture must see the
    stream its warm-up steps used (cuBLAS keeps a workspace per stream)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SIDE_STREAMS:
        _SIDE_STREAMS[index] = torch.cuda.Stream(device=index)
    return _SIDE_STREAMS[index]


class OneStream:
    """All on the current stream (CPU, eval, or the option off): the hand-overs do nothing."""

    def sr(self):
        return contextlib.nullcontext()

    def to_sr(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def to_main(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def join(self) -> None:
        pass


class TwoStreams(OneStream):
    """The SR model's operations inside ``with streams.sr():``, the recognizer's outside."""

    def __init__(self, device: torch.device):
        self.main = torch.cuda.current_stream(device)
        self.side = _side_stream(device)

    def sr(self):
        return torch.cuda.stream(self.side)

    def to_sr(self, t: torch.Tensor) -> torch.Tensor:
        return _hand_over(t, self.main, self.side)

    def to_main(self, t: torch.Tensor) -> torch.Tensor:
        return _hand_over(t, self.side, self.main)

    def join(self) -> None:
        """The current stream waits for all the side stream's work: at the end of the forward
        (the losses read the SR outputs; a capture must end on the stream it began on)."""
        self.main.wait_stream(self.side)


def _hand_over(t: torch.Tensor, maker: torch.cuda.Stream, reader: torch.cuda.Stream):
    done = torch.cuda.Event()
    done.record(maker)
    reader.wait_event(done)
    t.record_stream(reader)
    return t


def branch_streams(x: torch.Tensor, enabled: bool) -> OneStream:
    return TwoStreams(x.device) if enabled and x.is_cuda else OneStream()


__all__ = ["OneStream", "TwoStreams", "branch_streams"]
