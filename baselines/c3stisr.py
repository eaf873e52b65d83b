"""C3-STISR (Zhao et al., "C3-STISR: Scene Text Image Super-resolution with Triple Clues",
IJCAI 2022), with all three clues reaching the SRBs, and the BCN language model it relies on.

The method, in the paper's notation:
- clue extraction  h_rec, h_vis, h_ling = f_CE(R(I_LR)), from the recognizer's output R(I_LR):
  * recognition clue h_rec: the TPG's probability sequence (as TPGSR) projected by InfoGen;
  * visual clue h_vis: the recognized text drawn as an image (here: glyphs of DejaVu Sans Mono
    placed along the width, see ``GlyphRenderer``), fused with a second InfoGen projection of the
    same prediction by a deformable fuser that aligns the drawing with the LR layout;
  * linguistic clue h_ling: the prediction corrected by a bidirectional cloze language model
    (ABINet's BCN) and projected by a third InfoGen;
  each clue then passes its own spatial attention (the release's DSTA).
- clue fusion  h_t = f_CF(h_rec, h_vis, h_ling): gated fusion, a softmax over the three clues of
  per-pixel, per-channel gates computed from each clue stacked with a 1x1 projection of the LR
  features (the first TSRN block's output).
- super-resolution  I_SR = f_SR(I_LR, h_t): TSRN whose five SRBs take h_t as their clue (as
  TPGSR's SRBs take the text prior), STN in training only, RGB + text-mask output.
- loss  L = L_img + L_TP + L_LM: TSRN's image loss 100 (MSE + 1e-4 GP) on RGB + mask; TPGSR's TP
  loss (TPG on LR vs a frozen CRNN on HR, x100), which the C3 code keeps ("use_distill"); and the
  CTC loss of the language model's corrected sequence against the label, with which the release
  trains its linguistic clue.

Deviations, on purpose:
1. In the release the fused clue is computed but the SRBs receive only the recognition clue
   (ORIGINALS.md §3.4): its output depends on 1,690,821 parameters, TPGSR's. Here h_t, built from
   all three clues, is what the SRBs read; the tests perturb each clue and see the output change.
2. The release wires two clues into its gated fusion (recognition, linguistic; the visual path is
   commented out, README: "visual clue removed"). The paper's method has three: so here.
3. STT's text-focus loss (attention-map L1 and content CE of a pretrained transformer recognizer,
   issue #7 of C3-STISR) is left out: that recognizer is neither released nor part of the suite,
   and a stand-in would be a different loss. The TP loss keeps a text-level supervision.
4. Torchvision's DeformConv2d is replaced by the suite's grid_sample implementation
   (``image_bench.models.clues.DeformableDepthwiseConv``), same parameters.
5. The visual fuser reads 16 channels as the release's: 4 from the 32x128 glyph drawing folded to
   16x64 (pixel unshuffle; the release's 6 drawing channels are undocumented) + 12 from InfoGen
   (the release's 10), so the fuser keeps the release's 334,096 parameters.
6. The TPG is the suite's 3-channel 32x128 CRNN (T = 33 frames) instead of the 1-channel 32x100
   one (T = 26), so the BCN works on 33 frames.
7. The release holds two BCNs ('lm', loaded but not used by forward, and 'correction_model');
   one BCN, the corrector, is enough for the method and is the one here.

Parameters at inference (STN and the frozen teacher excluded; tests/test_c3stisr.py checks them):
  ours     SR side 3,870,341 (TSRN with clue SRBs 836,869; three InfoGens 853,952 + 853,952 +
           842,392; visual fuser 334,096; three spatial attentions 3 x 35,848; guide 2,080; gated
           fusion 39,456) + BCN 12,647,461 + TPG CRNN 8,331,173 = 24,848,975; 3.18 GFLOPs (MACs,
           the suite's fvcore count, batch 1): TPG 0.90, BCN 0.42, SR side 1.86.
  release  29,153,835 without STN (31,008,883 registered) + its CRNN 8,331,301 = 37,485,136, of
           which only 1,690,821 + the CRNN reach its output (ORIGINALS.md §4).
  paper    58.52M and 4.54 GFLOPs for the C3-STISR + CRNN row of the IMAGE paper's Table 1; the
           row includes the evaluation CRNN (the + SVTR row is 58.52 - 8.36 + 22.70 = 72.86).
Ours minus the release: one BCN instead of two (-12,647,461; the release registers 'lm' and
'correction_model', neither run by its forward), a three-way gated fusion (+10,272 over the
release's, whose third branch exists but whose compression is two-way) and a 12-channel visual
InfoGen (+1,156 over 10 channels). Comparable with the paper's row (+ the evaluation CRNN):
ours 33.18M, the release 29.15M + TPG 8.33M + evaluation CRNN 8.33M = 45.82M; the paper's
58.52M is 12.7M above the release, about one more BCN (12.65M) -- a guess the public code cannot
confirm, so nothing is added to match it.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from baselines.tpgsr import TextPriorMixin
from image_bench import charset
from image_bench.losses import ctc_loss, tsrn_image_loss
from image_bench.models.base import BenchModel, ModelOutput, register
from image_bench.models.clues import (
    DeformFuser,
    GatedFusion,
    GlyphRenderer,
    InfoGen,
    SpatialClueAttention,
    prior_dropout,
    text_prior_loss,
)
from image_bench.models.recognizer import Recognizer
from image_bench.models.tsrn import (
    TSRN_FAMILY_LR_SCHEDULE,
    TSRN_FAMILY_STN,
    TSRNBackbone,
    add_text_mask,
)

# The family's STN and schedule: models/tsrn.py says why.
STN_DEFAULT = TSRN_FAMILY_STN

# ---------------------------------------------------------------------------------------------
# BCN: ABINet's bidirectional cloze network, the linguistic-clue corrector


def sinusoid_table(length: int, dim: int) -> torch.Tensor:
    """Transformer sine/cosine position table (length, dim)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table


class ClozeLayer(nn.Module):
    """A BCN decoder layer: no self-attention; the position queries attend to the token
    embeddings (each query masked from its own token), then a ReLU FFN; post-norm residuals."""

    def __init__(self, d_model: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.norm_attn = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn), nn.ReLU(inplace=True),
                                 nn.Dropout(dropout), nn.Linear(ffn, d_model))
        self.norm_ffn = nn.LayerNorm(d_model)
        self.drop_attn, self.drop_ffn = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, memory: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attn(query, memory, memory, attn_mask=mask, need_weights=False)
        query = self.norm_attn(query + self.drop_attn(attended))
        return self.norm_ffn(query + self.drop_ffn(self.ffn(query)))


@register("bcn")
class BCN(BenchModel):
    """ABINet's BCN (Fang et al., CVPR 2021, §3.3), as C3-STISR uses it: probability sequence
    (B, T, 37) in, corrected logits (B, T, 37) out. d_model 512, 8 heads, FFN 2048, 4 layers,
    dropout 0.1; tokens are embedded by a bias-free linear map plus a sine position table; the
    queries are the position table alone; the location mask hides token t from query t, so each
    output is a cloze guess from its context in both directions. The input is detached, as in
    ABINet, so the language model never pushes gradients into the recognizer.

    In C3-STISR the BCN reads the recognizer's CTC frames (its training loss is CTC), so here a
    sequence is T = 33 CTC frames (the suite's CRNN), all valid, and no padding mask is needed.
    12,647,461 parameters at d_model 512 (the 37-class heads included): the count of ABINet's.

    Pretraining (``training_step``): the label of a ``synth`` word is spelt as clean CTC frames,
    corrupted (character substitutions and drops, then soft, noisy probabilities like a
    recognizer's), and the BCN learns to give back the clean word (CTC loss). Images are ignored.
    """

    kind: ClassVar[str] = "aux"
    # ABINet's language-model pretraining: Adam, lr 1e-4, no weight decay.
    optim_overrides: ClassVar[dict[str, float]] = {"lr": 1e-4, "weight_decay": 0.0}

    def __init__(self, d_model: int = 512, heads: int = 8, ffn: int = 2048, layers: int = 4,
                 max_length: int = 33, dropout: float = 0.1,
                 num_classes: int = charset.NUM_CLASSES, substitute_rate: float = 0.1,
                 drop_rate: float = 0.05):
        super().__init__()
        self.max_length, self.num_classes = max_length, num_classes
        self.substitute_rate, self.drop_rate = substitute_rate, drop_rate
        self.proj = nn.Linear(num_classes, d_model, bias=False)
        self.register_buffer("positions", sinusoid_table(max_length, d_model), persistent=False)
        self.token_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(ClozeLayer(d_model, heads, ffn, dropout) for _ in range(layers))
        self.cls = nn.Linear(d_model, num_classes)

    def forward(self, probs: torch.Tensor) -> ModelOutput:
        if probs.dim() != 3 or probs.shape[-1] != self.num_classes:
            raise ValueError(f"BCN expects probabilities (B, T, {self.num_classes}), got "
                             f"{tuple(probs.shape)}")
        b, t, _ = probs.shape
        if t > self.max_length:
            raise ValueError(f"sequence of {t} frames exceeds the BCN's max_length "
                             f"{self.max_length}")
        pos = self.positions[:t].to(probs.dtype)
        memory = self.token_dropout(self.proj(probs.detach()) + pos)
        query = pos.expand(b, t, -1)
        # Boolean mask (True = hidden) so that it is valid under any autocast dtype.
        location = torch.eye(t, dtype=torch.bool, device=probs.device)
        for layer in self.layers:
            query = layer(query, memory, location)
        return ModelOutput(logits=self.cls(query))

    def loss(self, output: ModelOutput, batch: dict) -> dict[str, torch.Tensor]:
        return {"ctc": ctc_loss(output.logits, batch["targets"], batch["target_lengths"])}

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        return torch.rand(batch_size, self.max_length, self.num_classes).softmax(dim=-1)

    def spell_frames(self, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Clean CTC frames (B, T) of padded labels: the T frames are split evenly among the L
        characters; a slot of two or more frames starts with a blank, so repeated letters
        survive the CTC collapse (labels longer than T/2 lose that blank; the loss still holds
        the clean label)."""
        t = self.max_length
        lengths = lengths.to(targets.device, non_blocking=True).clamp(min=1,
                                                                      max=min(t, targets.shape[1]))
        frame = torch.arange(t, device=targets.device)
        slot = (frame[None, :] * lengths[:, None]) // t  # (B, T) character index per frame
        chars = targets.gather(1, slot)
        widths = torch.zeros_like(targets).scatter_add_(1, slot, torch.ones_like(slot))
        first = torch.ones_like(slot, dtype=torch.bool)
        first[:, 1:] = slot[:, 1:] != slot[:, :-1]
        blank = first & (widths.gather(1, slot) >= 2)
        return torch.where(blank, torch.full_like(chars, charset.BLANK), chars)

    def corrupt(self, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Noisy recognizer-like probabilities (B, T, C) of corrupted labels."""
        noisy = targets.clone()
        real = noisy != charset.BLANK
        roll = torch.rand(noisy.shape, device=noisy.device)
        substitute = real & (roll < self.substitute_rate)
        random_chars = torch.randint(1, self.num_classes, noisy.shape, device=noisy.device)
        noisy = torch.where(substitute, random_chars, noisy)
        drop_band = (roll >= self.substitute_rate) & (roll < self.substitute_rate + self.drop_rate)
        drop = real & drop_band
        noisy = torch.where(drop, torch.full_like(noisy, charset.BLANK), noisy)
        frames = self.spell_frames(noisy, lengths)
        b = frames.shape[0]
        # A recognizer's confidence varies per word; the noise spreads mass to other classes.
        confidence = torch.empty(b, 1, 1, device=frames.device).uniform_(2.0, 7.0)
        logits = F.one_hot(frames, self.num_classes).float() * confidence
        logits = logits + torch.randn_like(logits)
        return logits.softmax(dim=-1)

    def training_step(self, batch: dict) -> tuple[ModelOutput, dict[str, torch.Tensor]]:
        probs = self.corrupt(batch["targets"], batch["target_lengths"])
        output = self(probs)
        return output, self.loss(output, batch)


# ---------------------------------------------------------------------------------------------
# C3-STISR


@register("c3stisr")
class C3STISR(TextPriorMixin, BenchModel):
    kind: ClassVar[str] = "sr"
    training_only: ClassVar[tuple[str, ...]] = ("backbone.stn", "teacher")
    stn_default: ClassVar[str] = STN_DEFAULT
    lr_schedule: ClassVar[str] = TSRN_FAMILY_LR_SCHEDULE
    requires: ClassVar[dict[str, str]] = {"recognizer": "crnn", "language_model": "bcn"}
    # C3-STISR trains with TPGSR's training code (README command, log): Adam lr 1e-3 constant,
    # betas (0.5, 0.999), gradient clipping 0.25.
    optim_overrides: ClassVar[dict[str, float]] = {
        "lr": 1e-3, "beta1": 0.5, "beta2": 0.999, "weight_decay": 0.0, "grad_clip": 0.25}

    def __init__(self, recognizer: Recognizer | None = None, language_model: BCN | None = None,
                 clue_channels: int = 32, channels: int = 64, num_blocks: int = 5,
                 info_widths: tuple[int, int, int] = (512, 128, 64), fuser_width: int = 32,
                 stn: str | bool = STN_DEFAULT):
        """Defaults are the release's sizes; ``recognizer`` (default: the suite's CRNN) and
        ``language_model`` (default: a full BCN) fix the helpers' architectures, and smaller
        widths exist only for tiny CPU test models."""
        super().__init__()
        self._init_text_prior(recognizer)
        self.language_model = language_model if language_model is not None else BCN()
        size = self.input_size
        c = clue_channels
        # f_CE: one InfoGen per clue (C3's variant: first two transposed convs unpadded).
        self.info_rec = InfoGen(out_channels=c, size=size, c3_padding=True, widths=info_widths)
        self.info_ling = InfoGen(out_channels=c, size=size, c3_padding=True, widths=info_widths)
        self.info_vis = InfoGen(out_channels=12, size=size, c3_padding=True, widths=info_widths)
        self.renderer = GlyphRenderer(2 * size[0], 2 * size[1])
        self.vis_fuser = DeformFuser(4 + 12, c, width=fuser_width)
        self.attn_rec = SpatialClueAttention(c)
        self.attn_vis = SpatialClueAttention(c)
        self.attn_ling = SpatialClueAttention(c)
        # f_CF: gated fusion guided by a 1x1 projection of the LR features.
        self.guide = nn.Conv2d(channels, c, 1)
        self.fusion = GatedFusion(c, num_clues=3)
        # f_SR: TSRN with clue-guided SRBs.
        self.backbone = TSRNBackbone(channels, num_blocks, c, mask=True, stn=stn)

    def attach(self, role: str, module: nn.Module) -> None:
        if role != "language_model":
            super().attach(role, module)
            return
        try:
            self.language_model.load_state_dict(module.state_dict())
        except RuntimeError as err:
            raise ValueError(f"C3STISR: the attached language model does not match: {err}") from err

    def extract_clues(self, lr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw clue inputs from the LR: the TPG's prediction, its BCN correction and the drawing
        of the predicted text (prior dropout applied in training, as TPGSR's)."""
        rec_logits, rec = self.text_prior(lr)
        ling_logits = self.language_model(rec).logits
        ling = ling_logits.float().softmax(dim=-1).to(ling_logits.dtype)
        rec_used = prior_dropout(rec, self.training)
        return {"rec_logits": rec_logits, "rec": rec, "ling_logits": ling_logits,
                "rec_used": rec_used, "ling_used": prior_dropout(ling, self.training),
                "glyph": self.renderer(rec_used)}  # a dropped prior draws an empty image

    def fuse_clues(self, head: torch.Tensor, rec: torch.Tensor, glyph: torch.Tensor,
                   ling: torch.Tensor) -> torch.Tensor:
        """h_t = f_CF(h_rec, h_vis, h_ling) at the LR feature size (B, C_clue, 16, 64)."""
        h_rec = self.attn_rec(self.info_rec(rec))
        drawing = F.pixel_unshuffle(glyph, 2)  # 32x128 drawing -> 4 x 16x64, no detail lost
        h_vis = self.attn_vis(self.vis_fuser(torch.cat([drawing, self.info_vis(rec)], dim=1)))
        h_ling = self.attn_ling(self.info_ling(ling))
        return self.fusion(self.guide(head), [h_rec, h_vis, h_ling])

    def super_resolve(self, lr: torch.Tensor, rec: torch.Tensor, glyph: torch.Tensor,
                      ling: torch.Tensor) -> torch.Tensor:
        """f_SR with the fused clue: (B,3,16,64) -> (B,4,32,128). TSRNBackbone.forward's body,
        unrolled because the fusion needs the first block's features as its guide."""
        bb = self.backbone
        head = bb.block1(bb.prepare(lr))
        clue = self.fuse_clues(head, rec, glyph, ling)
        x = head
        for block in bb.blocks:
            x = block(x, clue)
        x = bb.block7(x) + head
        return torch.tanh(bb.tail(bb.upsample(x)))

    def forward(self, lr: torch.Tensor) -> ModelOutput:
        if lr.dim() != 4 or lr.shape[1] != 3:
            raise ValueError(f"C3STISR expects an RGB batch (B, 3, 16, 64), got "
                             f"{tuple(lr.shape)}")
        clues = self.extract_clues(lr)
        out = self.super_resolve(lr, clues["rec_used"], clues["glyph"], clues["ling_used"])
        return ModelOutput(sr=out[:, :3], extras={
            "mask": out[:, 3:], "tp": clues["rec"], "tp_logits": clues["rec_logits"],
            "ling_logits": clues["ling_logits"], "glyph": clues["glyph"]})

    def loss(self, output: ModelOutput, batch: dict) -> dict[str, torch.Tensor]:
        hr = batch["hr"]
        sr = torch.cat([output.sr, output.extras["mask"]], dim=1)
        return {"image": tsrn_image_loss(sr, add_text_mask(hr)),
                "text_prior": text_prior_loss(output.extras["tp"], self.teacher_prior(hr)),
                "language": ctc_loss(output.extras["ling_logits"], batch["targets"],
                                     batch["target_lengths"])}
