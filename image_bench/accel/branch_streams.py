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
does not give its memory to the maker while the reader may still run. :class:`StreamedIMAGE` and
:class:`StreamedMutualGuidance` are ``models.image``'s forward passes with those hand-overs
(same parameters; :func:`training_streams` swaps them in); on one stream they compute the plain
forward, which the CPU tests check.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from image_bench.accel.swap import swap_class
from image_bench.models.base import ModelOutput
from image_bench.models.image import IMAGE, LR_SIZE, MutualGuidance

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


class StreamedMutualGuidance(MutualGuidance):
    """u_i (Eq. 3) with phi's operations (q_CD, q_PJ) inside ``streams.sr()``."""

    def forward(self, h_p: torch.Tensor, h_s: torch.Tensor, streams: OneStream = OneStream()):
        p = self.ct1(h_s)  # Eq. 4
        with streams.sr():  # Eq. 6
            h_hat, sr = self.cd(h_p, map_grad=self.clue_exchange and not self.detach_clues)
        if not self.clue_exchange:
            return None, None, sr, p, None
        probs = p.softmax(-1)
        pixel = h_hat
        if self.detach_clues:
            probs, pixel = probs.detach(), pixel.detach()
        probs = streams.to_sr(probs)
        with streams.sr():
            c_s = self.pj(probs)  # Eq. 5
        c_p = self.vt(streams.to_main(pixel))  # Eq. 7
        p_hat = self.ct2(c_p)  # Eq. 8
        return c_s, c_p, sr, p, p_hat


class StreamedIMAGE(IMAGE):
    """IMAGE's forward with phi (STN, encoder, SRBs, decoders) on a side stream in training."""

    def forward(self, lr: torch.Tensor) -> ModelOutput:
        if lr.dim() != 4 or lr.shape[1] != 3 or tuple(lr.shape[-2:]) != LR_SIZE:
            return super().forward(lr)  # which raises IMAGE's error
        streams = branch_streams(lr, self.training)
        with streams.sr():
            sr_input = streams.to_sr(lr)
            sr_input = self.stn(sr_input) if self.stn is not None and self.training else sr_input
            h0_p = self.pixel_encoder(sr_input)
        h_p, h_s = h0_p, self.semantic_encoder(lr)
        sr_steps, logits_steps, clue_steps = [], [], []
        for u, f, g in zip(self.guidance_modules, self.srbs, self.fusers):
            c_s, c_p, sr_i, p_i, p_hat_i = u(h_p, h_s, streams)  # Eq. 3
            if c_s is None:
                with streams.sr():
                    c_s = h_p.new_zeros(h_p.shape[0], self.channels, *h_p.shape[-2:])
                c_p = torch.zeros_like(h_s)
            else:
                clue_steps.append(p_hat_i)
            with streams.sr():
                h_p = f(h_p, c_s)  # Eq. 1
            h_s = g(h_s, c_p)  # Eq. 2
            sr_steps.append(streams.to_main(sr_i))
            logits_steps.append(p_i)
        with streams.sr():
            _, sr = self.sr_decoder(h_p, skip=h0_p, map_grad=False)
        sr = streams.to_main(sr)
        streams.join()
        return ModelOutput(sr=sr, logits=self.ctc_decoder(h_s), sr_steps=sr_steps,
                           logits_steps=logits_steps, clue_logits_steps=clue_steps)


def training_streams(model: nn.Module, device: torch.device) -> bool:
    """Two CUDA streams in training for a model of two branches that share no gradient (IMAGE
    with detached clues: the SR model on a side stream). For one CUDA device: the trainer does
    not call it under DDP, whose gradient hooks were not tried with two streams. Returns whether
    it is on."""
    if device.type != "cuda" or not isinstance(model, IMAGE):
        return False
    swap_class(model, StreamedIMAGE)
    for module in model.guidance_modules:
        swap_class(module, StreamedMutualGuidance)
    return True


__all__ = ["OneStream", "StreamedIMAGE", "StreamedMutualGuidance", "TwoStreams",
           "branch_streams", "training_streams"]
