"""IMAGE: Iterative MutuAl GuidancE (Zhao, Wang, Guan, Zhou), Section 3 of the paper.

One model for two tasks: a super-resolution (SR) model phi and a recognition model varphi read the
same LR image and, over L iterations, hand each other clues through the mutual guidance u_i:

    h_0^p = conv encoder(STN(I_LR))            h_0^s = ViT_[H, W//32](I_LR)         (Sec. 3.2/3.3)
    for i = 1..L:
        c_i^s, c_i^p, I_i^SR, p_i, p-hat_i = u_i(h_{i-1}^p, h_{i-1}^s)              (Eq. 3-8)
        h_i^p = f_i(h_{i-1}^p, c_i^s)          (clue-guided SRB)                      (Eq. 1)
        h_i^s = g_i([h_{i-1}^s, c_i^p])        (transformer encoder)                  (Eq. 2)
    I_{L+1}^SR = conv decoder(h_L^p)           p_{L+1} = CTC decoder(h_L^s)
    L = sum_i 2^i L_GP(I_i^SR, I_HR) + sum_i 2^i CTC(p_i) + sum_i 2^i CTC(p-hat_i)     (Eq. 9-11)

No public code of IMAGE exists. Where the paper is silent the choice is marked "SILENT:" below;
the sizes are chosen so that parameters and MACs land on the paper's Tables 1 and 5.

Cost arithmetic (MACs, fvcore convention: GRU gates and attention products counted; LR 16x64,
C' = 64, M = 32 tokens, D = 196). One timm block (D = 196, MLP ratio 4) holds 463,540 parameters
and costs 460,992 * n linear MACs + 2 * n^2 * D attention MACs on n tokens: 15.15M at n = 32,
31.11M at n = 64.

- Initial features (paper 0.26G): conv9x9 3->64 at 16x64 (15.6K params, 15.9M MACs) + ViT patch
  embedding (25.3K, 0.6M) + 16 blocks on 32 tokens (7.42M, 242M) = 7.46M params, 0.259G.
- One iteration (paper 1.44G; 56.22M - 31.84M = 24.38M params per iteration):
  q_CT1 + q_CT2 (2 x 7.3K, 0.5M) + q_PJ (0.87M, 61M) + q_CD (0.20M, 253M)
  + q_VT patch embedding on the 64x32x128 h-hat with [32, 4] patches (1.61M, 51M)
  + q_VT 30 blocks on 32 tokens (13.91M, 454M) + SRB with a 64-channel clue (0.12M, 126M)
  + g_i 16 blocks on 64 tokens (7.42M, 498M) = 24.15M params, 1.44G.
  Why so much transformer: convolutions at 16x64 cost ~1024 MACs per parameter, blocks on 32
  tokens ~32; 24.4M parameters for 1.44G MACs leave ~21.6M parameters in blocks at an average
  ~44 MACs per parameter, which only works if part of them sees more than 32 tokens: g_i on the
  2M = 64 concatenated tokens (Eq. 2) supplies exactly that.
- Final decoding (paper 0.27G): TSRN tail conv3x3+BN, conv3x3 64->256, PixelShuffle, conv9x9
  64->3 (0.20M, 253M) + FC 196->37 (7.3K, 0.2M) = 0.21M, 0.253G.
Measured (``image-bench cost``, fvcore + GRU/attention handlers, batch 1, eval): IMAGE-1
31,812,778 params / 1.961G, IMAGE-2 55,960,011 / 3.409G, IMAGE-3 80,107,244 / 4.858G (paper
31.84M / 1.98G, 56.22M / 3.41G, 80.6M); Table 5 split 0.260G / 1.448G per iteration / 0.253G
(paper 0.26 / 1.44 / 0.27). The Table 4 ablation (guidance=False, L = 2, zero clues) costs 1.24G
in the recognition model (paper 1.23G) and 1.02G in the SR model (paper 1.17G).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from image_bench import charset
from image_bench.losses import ctc_losses, tsrn_image_loss
from image_bench.models.base import BenchModel, ModelOutput, register
from image_bench.models.image_parts import ConvDecoder, Projector, TransformerStack, ViTEncoder
from image_bench.models.srb import SRB
from image_bench.models.stn import build_stn

LR_SIZE = (16, 64)
HR_SIZE = (32, 128)

# The STN setting this model trains with by default (``--set stn=none|original|identity``; see
# models/stn.py and the README's STN table). Measured on one H200 at the quick schedule
# (results/stn.md, at 3e82457), IMAGE-1 S+L: 20.69 dB / 31.3% without STN, 20.70 / 23.5% with
# the originals' STN, 17.10 / 21.8% with the STN at the identity (bicubic 20.13 dB): no STN
# reads best by 7.8 points at the same PSNR.
STN_DEFAULT = "none"


class MutualGuidance(nn.Module):
    """u_i (Eq. 3): (h_{i-1}^p, h_{i-1}^s) -> (c_i^s, c_i^p, I_i^SR, p_i, p-hat_i).

    With ``clue_exchange=False`` (the Table 4 "no guidance" ablation) only the two heads that belong
    to one model each are built: q_CT1 (reads the recognizer's feature) and q_CD (reads the SR
    model's feature); the cross-modal converters q_PJ, q_VT and q_CT2 do not exist.
    """

    def __init__(self, channels: int, dim: int, num_tokens: int, vt_depth: int, heads: int,
                 mlp_ratio: float, projector_widths: tuple[int, ...], clue_exchange: bool,
                 detach_clues: bool):
        super().__init__()
        self.clue_exchange = clue_exchange
        self.detach_clues = detach_clues
        classes = charset.NUM_CLASSES
        # Eq. 4, q_CT1: "a CTC-based decoder implemented by a fully connection layer".
        self.ct1 = nn.Linear(dim, classes)
        # Eq. 6, q_CD: conv decoder with pixel shuffle -> (h-hat_i, I_i^SR).
        self.cd = ConvDecoder(channels)
        if not clue_exchange:
            return
        # Eq. 5, q_PJ: p_i -> c_i^s with C' channels on the LR grid.
        self.pj = Projector(classes, channels, LR_SIZE, projector_widths)
        # Eq. 7, q_VT: ViT with patch [2H, W//16] on h-hat. SILENT: h-hat is "in R^{C' x N}" in the
        # text, but it is the pixel-shuffle output, a C' x 2H x 2W map; the patch [2H, W//16] =
        # [32, 4] only tiles that map, and gives 32 = M tokens, as c_i^p in R^{M x D} needs.
        patch = (2 * LR_SIZE[0], LR_SIZE[1] // 16)
        self.vt = ViTEncoder(channels, HR_SIZE, patch, dim, vt_depth, heads, mlp_ratio)
        if self.vt.num_tokens != num_tokens:
            raise ValueError(f"q_VT gives {self.vt.num_tokens} tokens, the recognizer {num_tokens}")
        # Eq. 8, q_CT2: FC on the pixel clue -> p-hat_i.
        self.ct2 = nn.Linear(dim, classes)

    def forward(self, h_p: torch.Tensor, h_s: torch.Tensor):
        p = self.ct1(h_s)  # Eq. 4
        # Eq. 6; h-hat takes a gradient only from q_VT, through a live clue
        h_hat, sr = self.cd(h_p, map_grad=self.clue_exchange and not self.detach_clues)
        if not self.clue_exchange:
            return None, None, sr, p, None
        # "The two models are optimized separately" (Sec. 1, abstract): with detach_clues the clues
        # carry information across but no gradient, so L_SR trains phi + q_PJ and L_Rec trains
        # varphi + q_VT + q_CT2 (SILENT on the mechanism; a stop-gradient at the two crossings is
        # the plain reading).
        probs = p.softmax(-1)  # SILENT: q_PJ reads probabilities, as TPGSR's text prior
        pixel = h_hat
        if self.detach_clues:
            probs, pixel = probs.detach(), pixel.detach()
        c_s = self.pj(probs)  # Eq. 5
        c_p = self.vt(pixel)  # Eq. 7
        p_hat = self.ct2(c_p)  # Eq. 8
        return c_s, c_p, sr, p, p_hat


class ClueFusion(nn.Module):
    """g_i (Eq. 2): h_i^s = g_i([h_{i-1}^s, c_i^p]).

    SILENT on the axis of the concatenation. We concatenate along the tokens (2M tokens of D) and
    keep the first M outputs, the positions of h_{i-1}^s: self-attention then lets every semantic
    token read every pixel-clue token, D stays 196 throughout, and the 2M-token pass is what lands
    the paper's 1.44G per iteration (see the module docstring; a feature-axis concatenation with a
    projection back to D would leave every block at 32 tokens and ~0.26G short per iteration).
    """

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.trunk = TransformerStack(dim, depth, heads, mlp_ratio)

    def forward(self, h_s: torch.Tensor, c_p: torch.Tensor) -> torch.Tensor:
        m = h_s.shape[1]
        return self.trunk(torch.cat([h_s, c_p], dim=1))[:, :m]


class IMAGE(BenchModel):
    """IMAGE-L. ``forward(lr)`` -> ModelOutput(sr=I_{L+1}, logits=p_{L+1}, sr_steps=[I_1..I_L],
    logits_steps=[p_1..p_L], clue_logits_steps=[p-hat_1..p-hat_L]).

    Ablations (Table 4), as constructor kwargs:
    - ``guidance=False``: no clue exchange. q_PJ, q_VT and q_CT2 are not built and the clue inputs
      of f_i and g_i are zeros (SILENT: zeros keep f_i and g_i, and so the cost split, identical to
      IMAGE's; a zero map adds nothing in the SRB, and M zero tokens in g_i carry no sample
      information, only learned constants). The two models then share no parameter, no
      information and no gradient: the "Recognition model" and "Super-resolution model" rows.
    - ``clue_losses=False``: only I_{L+1} and p_{L+1} are supervised ("Without losses of IMAGE").
    - ``detach_clues=False``: let gradients cross the clues (joint optimisation), for comparison
      with the paper's separately optimised models.
    """

    kind: ClassVar[str] = "joint"
    input_size: ClassVar[tuple[int, int]] = LR_SIZE
    training_only: ClassVar[tuple[str, ...]] = ("stn",)
    stn_default: ClassVar[str] = STN_DEFAULT

    def __init__(self, iterations: int = 1, guidance: bool = True, clue_losses: bool = True,
                 detach_clues: bool = True, channels: int = 64, dim: int = 196, heads: int = 4,
                 mlp_ratio: float = 4.0, vit_depth: int = 16, fuser_depth: int = 16,
                 clue_vit_depth: int = 30, projector_widths: tuple[int, ...] = (512, 128, 64),
                 stn: str | bool = STN_DEFAULT):
        super().__init__()
        if iterations < 1:
            raise ValueError(f"IMAGE needs at least one iteration, got {iterations}")
        self.iterations = iterations
        self.guidance = guidance
        self.clue_losses = clue_losses
        self.channels = channels
        # --- SR model phi (Sec. 3.2) ---
        self.stn = build_stn(stn, 3, LR_SIZE)  # training only, as in the TSRN family
        # Conv encoder -> h_0^p. SILENT: layers; TSRN's block1 (conv9x9 3->C' + PReLU).
        self.pixel_encoder = nn.Sequential(nn.Conv2d(3, channels, 9, padding=4), nn.PReLU())
        # f_i (Eq. 1): the clue (C' channels, Sec. 3.1) joins the residual before the first GRU.
        self.srbs = nn.ModuleList(SRB(channels, clue_channels=channels) for _ in range(iterations))
        self.sr_decoder = ConvDecoder(channels)
        # --- recognition model varphi (Sec. 3.3) ---
        # ViT with patch [H, W//32] on the LR -> h_0^s, M = 32 tokens of D.
        # SILENT: depth, heads, MLP ratio (16, 4, 4: see the cost arithmetic above).
        self.semantic_encoder = ViTEncoder(3, LR_SIZE, (LR_SIZE[0], LR_SIZE[1] // 32), dim,
                                           vit_depth, heads, mlp_ratio)
        self.num_tokens = self.semantic_encoder.num_tokens
        self.fusers = nn.ModuleList(ClueFusion(dim, fuser_depth, heads, mlp_ratio)
                                    for _ in range(iterations))
        self.ctc_decoder = nn.Linear(dim, charset.NUM_CLASSES)  # final CTC decoder -> p_{L+1}
        # --- iterative mutual guidance (Sec. 3.4) ---
        self.guidance_modules = nn.ModuleList(
            MutualGuidance(channels, dim, self.num_tokens, clue_vit_depth, heads, mlp_ratio,
                           tuple(projector_widths), guidance, detach_clues)
            for _ in range(iterations))

    def forward(self, lr: torch.Tensor) -> ModelOutput:
        if lr.dim() != 4 or lr.shape[1] != 3 or tuple(lr.shape[-2:]) != LR_SIZE:
            raise ValueError(f"IMAGE reads (B, 3, {LR_SIZE[0]}, {LR_SIZE[1]}) LR images, "
                             f"got {tuple(lr.shape)}")
        # The STN corrects the LR-HR misalignment the SR loss sees; the recognizer reads the LR.
        sr_input = self.stn(lr) if self.stn is not None and self.training else lr
        h0_p = self.pixel_encoder(sr_input)
        h_p, h_s = h0_p, self.semantic_encoder(lr)
        sr_steps, logits_steps, clue_steps = [], [], []
        for u, f, g in zip(self.guidance_modules, self.srbs, self.fusers):
            c_s, c_p, sr_i, p_i, p_hat_i = u(h_p, h_s)  # Eq. 3
            if c_s is None:  # guidance=False: zero clues
                c_s = h_p.new_zeros(h_p.shape[0], self.channels, *h_p.shape[-2:])
                c_p = torch.zeros_like(h_s)
            else:
                clue_steps.append(p_hat_i)
            h_p = f(h_p, c_s)  # Eq. 1
            h_s = g(h_s, c_p)  # Eq. 2
            sr_steps.append(sr_i)
            logits_steps.append(p_i)
        # SILENT: TSRN's global skip from h_0^p
        _, sr = self.sr_decoder(h_p, skip=h0_p, map_grad=False)
        return ModelOutput(sr=sr, logits=self.ctc_decoder(h_s), sr_steps=sr_steps,
                           logits_steps=logits_steps, clue_logits_steps=clue_steps)

    def loss(self, output: ModelOutput, batch: dict) -> dict[str, torch.Tensor]:
        """Eq. 9-11 as named terms: 'sr' = L_SR, 'rec' = sum 2^i CTC(p_i), 'clue' = sum 2^i
        CTC(p-hat_i); their sum is L.

        L_GP is TSRN's image loss as its code trains (ORIGINALS §3.1): 100 * (MSE + 1e-4 * gradient
        prior L1). The paper cites Wang et al. 2020 for L_GP, and that is the form their released
        code uses and every TSRN-family baseline of this suite shares, so the fidelity terms are
        comparable across rows. With clue_losses=False only I_{L+1} and p_{L+1} keep their terms
        (weight 2^{L+1}, as in Eq. 9/10).
        """
        hr = batch.get("hr")
        if hr is None:
            raise ValueError("IMAGE trains on LR-HR pairs: the batch has no 'hr'")
        targets, lengths = batch["targets"], batch["target_lengths"]
        n = self.iterations + 1
        srs = [*output.sr_steps, output.sr]  # I_1 .. I_{L+1}
        logits = [*output.logits_steps, output.logits]  # p_1 .. p_{L+1}
        clues = list(output.clue_logits_steps)  # p-hat_1 .. p-hat_L
        if not self.clue_losses:
            srs, logits, clues = [output.sr], [output.logits], []
            first = n
        else:
            first = 1
        sr_loss = sum(2.0 ** (first + k) * tsrn_image_loss(img, hr) for k, img in enumerate(srs))
        # one call for every CTC term: on the sync-free path they share one recursion
        ctc = ctc_losses([*logits, *clues], targets, lengths)
        rec = sum(2.0 ** (first + k) * ctc[k] for k in range(len(logits)))
        terms = {"sr": sr_loss, "rec": rec}
        if clues:
            terms["clue"] = sum(2.0 ** (k + 1) * ctc[len(logits) + k] for k in range(len(clues)))
        return terms

    # ----- structure, for the cost counter and the trainer -----------------------------------

    def cost_groups(self) -> dict[str, list[str]]:
        """Table 5's split: submodule prefixes of each part, in order."""
        groups = {"initial features": ["pixel_encoder", "semantic_encoder"]}
        for i in range(self.iterations):
            groups[f"iteration {i + 1}"] = [f"guidance_modules.{i}", f"srbs.{i}", f"fusers.{i}"]
        groups["final decoding"] = ["sr_decoder", "ctc_decoder"]
        return groups

    def model_parts(self) -> dict[str, list[str]]:
        """Table 4's split: the SR model phi, the recognition model varphi, the guidance's
        cross-modal converters (q_PJ, q_VT, q_CT2; absent with guidance=False). The STN is
        training-only and left out."""
        its = range(self.iterations)
        parts = {
            "super-resolution model": ["pixel_encoder", "srbs", "sr_decoder",
                                       *(f"guidance_modules.{i}.cd" for i in its)],
            "recognition model": ["semantic_encoder", "fusers", "ctc_decoder",
                                  *(f"guidance_modules.{i}.ct1" for i in its)],
        }
        if self.guidance:
            parts["mutual guidance"] = [f"guidance_modules.{i}.{m}" for i in its
                                        for m in ("pj", "vt", "ct2")]
        return parts

    def loss_sides(self) -> dict[str, list[str]]:
        """Which prefixes each loss trains when clues are detached (or guidance is off):
        'sr' = phi + q_PJ (by L_SR), 'rec' = varphi + q_VT + q_CT2 (by L_Rec)."""
        parts = self.model_parts()
        sr = ["stn", *parts["super-resolution model"]]
        rec = list(parts["recognition model"])
        if self.guidance:
            its = range(self.iterations)
            sr += [f"guidance_modules.{i}.pj" for i in its]
            rec += [f"guidance_modules.{i}.{m}" for i in its for m in ("vt", "ct2")]
        return {"sr": sr, "rec": rec}


def _variant(iterations: int):
    class Variant(IMAGE):
        def __init__(self, **kwargs):
            if "iterations" in kwargs:
                raise TypeError(f"image-{iterations} fixes iterations = {iterations}")
            super().__init__(iterations=iterations, **kwargs)

    Variant.__name__ = Variant.__qualname__ = f"IMAGE{iterations}"
    Variant.__doc__ = f"IMAGE-{iterations}: L = {iterations} rounds of mutual guidance."
    return Variant


IMAGE1 = register("image-1")(_variant(1))
IMAGE2 = register("image-2")(_variant(2))
IMAGE3 = register("image-3")(_variant(3))

__all__ = ["IMAGE", "IMAGE1", "IMAGE2", "IMAGE3", "ClueFusion", "MutualGuidance"]
