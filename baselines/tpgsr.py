"""TPGSR (Ma, Guo, Zhang; "Text Prior Guided Scene Text Image Super-Resolution", TIP 2023 /
arXiv 2106.15368), single stage, as its released ``TSRN_TL`` with ``--STN --mask --use_distill
--gradient`` (ORIGINALS.md §3.2).

- A text-prior generator (TPG), a CRNN, reads the LR image and gives a probability sequence
  p_LR = softmax(TPG(I_LR)) over T frames and 37 classes: the text prior (TP).
- InfoGen maps the TP (37 x 1 x T) to a 32-channel map, resized to 16x64; the map is concatenated
  to the residual of every one of the five SRBs of TSRN (before its first GRU block):
  I_SR = f_SR(I_LR, InfoGen(p_LR)).
- Prior dropout: in training the first floor(B/4) samples get an all-zero TP.
- Loss: L = L_img + L_TP, L_img = 100 (MSE(SR, HR) + 1e-4 GP) over RGB + text mask,
  L_TP = 100 (|p_LR - p_HR|_1 + KL(p_HR || p_LR)), p_HR from a frozen copy of the pretrained CRNN
  on HR. The TP is not detached: the TPG is fine-tuned by both terms, in the same optimiser.

Deviation: the original's TPG is the 1-channel 32x100 evaluation CRNN (T = 26 frames); the
suite's CRNN reads RGB at 32x128 (T = 33), so InfoGen's map is 1x259 before the resize instead of
1x203. Parameters are unchanged: SR network 1,690,821 (STN excluded, as the official count) +
TPG CRNN 8,331,173 = 10,021,994 at inference. FLOPs (MACs, the suite's fvcore count, batch 1):
1.88 G = TPG 0.90 + SR network 0.97 (official SR branch 0.96 at T = 26, ORIGINALS.md §4).
The IMAGE paper's TPGSR + CRNN row gives 35.33M and 4.75 GFLOPs, evaluation CRNN included; this
single-stage model + the evaluation CRNN is 18.35M, as the official single-stage code. The
paper's figure is close to the three-stage variant (``--stu_iter 3 --sr_share``: one SR network,
three TPGs, 3.55 + 3 x 8.33 + 8.33 = 35.2M with STN), which may be what it counted; the suite
builds the single stage of the released training script.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
from torch import nn

from baselines.crnn import CRNN
from image_bench.losses import tsrn_image_loss
from image_bench.models.base import BenchModel, ModelOutput, register
from image_bench.models.clues import InfoGen, prior_dropout, text_prior_loss
from image_bench.models.recognizer import Recognizer
from image_bench.models.tsrn import (
    TSRN_FAMILY_LR_SCHEDULE,
    TSRN_FAMILY_STN,
    TSRNBackbone,
    add_text_mask,
)

# The family's STN and schedule: models/tsrn.py says why.
STN_DEFAULT = TSRN_FAMILY_STN


class TextPriorMixin:
    """The TPG + frozen teacher pair TPGSR and C3-STISR share (``self.tpg``, ``self.teacher``)."""

    tpg: Recognizer
    teacher: Recognizer

    def _init_text_prior(self, recognizer: Recognizer | None) -> None:
        template = recognizer if recognizer is not None else CRNN()
        self.tpg = template
        # The frozen copy reads HR to give p_HR; training only, never counted at inference.
        self.teacher = copy.deepcopy(template).requires_grad_(False).eval()

    def attach(self, role: str, module: nn.Module) -> None:
        if role != "recognizer":
            super().attach(role, module)  # type: ignore[misc]
            return
        state = module.state_dict()
        try:
            self.tpg.load_state_dict(state)
            self.teacher.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{type(self).__name__}: the attached recognizer does not match the "
                             f"TPG's architecture ({type(self.tpg).__name__}): {err}") from err

    @property
    def recognizer(self) -> Recognizer:
        """The frozen pretrained recognizer: what the engine's validation scores the SR output
        with (the originals validate with the fixed evaluation CRNN, not the fine-tuned TPG)."""
        return self.teacher

    def train(self, mode: bool = True):
        super().train(mode)  # type: ignore[misc]
        self.teacher.eval()  # BN statistics and dropout of the teacher stay frozen
        return self

    def text_prior(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TPG logits (B, T, 37) and probabilities on the bicubic-resized LR."""
        logits = self.tpg.read(lr).logits
        return logits, logits.float().softmax(dim=-1).to(logits.dtype)

    def teacher_prior(self, hr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.teacher.read(hr).logits.float().softmax(dim=-1)


@register("tpgsr")
class TPGSR(TextPriorMixin, BenchModel):
    kind: ClassVar[str] = "sr"
    training_only: ClassVar[tuple[str, ...]] = ("backbone.stn", "teacher")
    stn_default: ClassVar[str] = STN_DEFAULT
    lr_schedule: ClassVar[str] = TSRN_FAMILY_LR_SCHEDULE
    requires: ClassVar[dict[str, str]] = {"recognizer": "crnn"}
    # train_TPGSR-TSRN.sh: Adam lr 1e-3, betas (0.5, 0.999), no weight decay, grad clip 0.25.
    optim_overrides: ClassVar[dict[str, float]] = {
        "lr": 1e-3, "beta1": 0.5, "beta2": 0.999, "weight_decay": 0.0, "grad_clip": 0.25}

    def __init__(self, recognizer: Recognizer | None = None, clue_channels: int = 32,
                 channels: int = 64, num_blocks: int = 5,
                 info_widths: tuple[int, int, int] = (512, 128, 64), stn: str | bool = STN_DEFAULT):
        """Defaults are the original's; ``recognizer`` (default: the suite's CRNN) is the TPG's
        architecture, and smaller widths exist only for tiny CPU test models."""
        super().__init__()
        self._init_text_prior(recognizer)
        self.info_gen = InfoGen(out_channels=clue_channels, size=self.input_size,
                                widths=info_widths)
        self.backbone = TSRNBackbone(channels, num_blocks, clue_channels, mask=True, stn=stn)

    def super_resolve(self, lr: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """The SR branch alone: (B,3,16,64) LR + (B,T,37) TP -> (B,4,32,128) RGB + mask."""
        return self.backbone(lr, self.info_gen(prior))

    def forward(self, lr: torch.Tensor) -> ModelOutput:
        if lr.dim() != 4 or lr.shape[1] != 3:
            raise ValueError(f"TPGSR expects an RGB batch (B, 3, 16, 64), got {tuple(lr.shape)}")
        logits, probs = self.text_prior(lr)
        prior = prior_dropout(probs, self.training)
        out = self.super_resolve(lr, prior)
        return ModelOutput(sr=out[:, :3], extras={"mask": out[:, 3:], "tp": probs,
                                                  "tp_logits": logits, "tp_used": prior})

    def loss(self, output: ModelOutput, batch: dict) -> dict[str, torch.Tensor]:
        hr = batch["hr"]
        sr = torch.cat([output.sr, output.extras["mask"]], dim=1)
        return {"image": tsrn_image_loss(sr, add_text_mask(hr)),
                "text_prior": text_prior_loss(output.extras["tp"], self.teacher_prior(hr))}
