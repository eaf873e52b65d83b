"""IMAGE-2 speed levers beyond the graphed step (issue 7): which one cuts GPU work?

    PYTHONPATH=. python3 scripts/gpu_explore.py train|latency [--out DIR] [--variants a,b]

A variant is a name made of these tokens, on top of bf16 autocast, fused AdamW, regional
compilation of the transformer blocks and, for training, the whole step as a CUDA graph (at
batch 1 the call is a CUDA graph):
- ``sdpa``: attention through ``F.scaled_dot_product_attention`` (flash kernels, which pad
  IMAGE's 49-wide heads to 56) instead of the suite's written-out products (``vit.Attention``);
- ``autotune``: regions compiled with ``mode="max-autotune-no-cudagraphs"`` (Triton GEMM
  templates with fused epilogues instead of cuBLAS + separate bias/activation kernels);
- ``cudnntail``: the SR tails' 9x9 convolutions through cuDNN instead of the split product +
  Triton shifted sum (``models.tail_conv``);
- ``nofuse``: inference blocks as compiled blocks instead of the Triton launches
  (``models.fused_block``);
- ``nopdl``: the Triton blocks without programmatic dependent launch; ``q16``, ``a16``, ``h16``:
  16-wide tiles (instead of 32) for their qkv, attention or MLP launch;
- ``unaligned``: IMAGE's blocks on their own 196/49-wide operands instead of the zero-padded,
  aligned ones (``models.aligned_block``);
- ``nosr``: only the transformer blocks compiled, not the SR parts (SRBs with the fused GRU
  inside, the conv decoders, q_PJ), whose BatchNorm, Mish, pixel shuffle and copies then fuse;
- ``noattn``: the written-out attention products instead of the Triton short-sequence attention
  (``models.attention``, ``kernels.short_attention``);
- ``cl``: channels_last weights (training; the latency path tries it on its own; IMAGE trains
  with them anyway, ``BenchModel.train_channels_last``); ``nocl``: training without them;
  ``whole``: the whole model compiled as one graph instead of block by block;
- ``nostreams``: IMAGE's SR model on the recognizer's stream instead of a side stream
  (``models.branch_streams``);
- ``cdt``: Inductor's coordinate-descent tuning of its generated kernels' launch settings;
- ``nocombo``: without Inductor's combo kernels (``compile_regions(..., combo=True)`` in the
  bench's steady state; measured as ``combo`` when it was a global switch here: 3,977 -> 4,112);
- ``oldlayout``: the patch embeddings' features in (C, ph, pw) order whatever the input's layout
  (as before 53717e6);
- ``nnshuffle``: the SR decoders' upsampling as convolution + ``F.pixel_shuffle`` (its gradient
  in NCHW, re-laid by the convolution's backward) instead of ``models.pixel_shuffle``;
  ``oldshuffle``: convolution + a shuffle whose gradient keeps channels_last (as from f5b3ccf to
  before the (i, j, c) channel order of ``ShuffledConv2d``);
- ``torchctc``: the CTC losses' recursion in torch ops (~900 small kernels per step) instead of
  the two Triton kernels of ``kernels.ctc``;
- ``mapgrad``: the SR decoders return h-hat with a gradient even where none reaches it (as before
  ``ConvDecoder(map_grad=False)``);
- ``torchadamw``: clipping + AdamW as ``clip_grad_norm_`` + PyTorch's fused AdamW (multi-tensor
  launches) instead of the three Triton launches of ``engine.fused_update``;
- ``nobiascol``: the aligned blocks' qkv and fc1 biases through ``F.linear`` (their gradients
  summed by kernels of their own) instead of riding in the weights' first pad column;
- ``nosplitk``: the aligned blocks' weight gradients as cuBLAS's plain product (bf16 out) instead
  of the sliced one (``aligned_block.weight_grad``: a batched product of fp32 partials, summed);
  ``rows512``, ``rows2048``: slices of that many rows instead of ``aligned_block.SPLIT_ROWS``;
- ``atensum``: the sliced weight gradients' partials summed by ``torch.sum`` instead of the
  Triton kernel (``kernels.partial_sum``);
- ``gathertail``: the split SR tails' backward building grad_z (``gather_shifted``) for two batched
  products, instead of gathering it on chip (``shifted_planes.input_grad``/``weight_grad``);
- ``cudnnhead``: the SR heads' 9x9 3 -> 64 convolution with cuDNN's backward instead of
  ``tail_conv.HeadConv2d``'s;
- ``eagerloss``: TSRN's image loss eager instead of compiled (``losses.compile_image_loss``);
- (measured at 3c91a7b with variants since folded into ``optimize.region_types``: the STN and the
  patch embeddings as regions, and the stacks' final LayerNorms, which did not pay.)
E.g. ``base``, ``sdpa``, ``autotune``, ``sdpa-cl``. Results go to stdout and
DIR/explore_<what>.json, with the top kernels of the variants named in --kernels.

Measured so far (H100, torch 2.11): training IMAGE-2 samples/s sdpa 2,164, written-out 2,306-2,330,
+autotune (sdpa) 2,224 at 365 s of compilation, +cl 2,398; batch-1 IMAGE-2 ms sdpa 6.62,
written-out 6.46-7.23, +autotune 6.17, +bf16 weights 5.26 (2,982 -> 1,729 kernels per call;
bf16 weight copies are now part of the bench's optimized mode, so ``base`` includes them);
split SR tails (commit 61180b9): training ``cudnntail`` 2,355, ``base`` 2,587; Triton blocks at
batch 1 (32-wide tiles): ``nofuse`` 5.40 ms, ``base`` 3.96 ms (1,729 -> 682 kernels per call);
with programmatic dependent launch (commit 03511bd): ``nopdl`` 4.08 ms, ``base`` 3.78 ms; the
MLP as one launch split over the hidden units: 3.85 -> 3.14 ms (571 kernels per call); the
attention per head: 2.34-2.37 ms. Training at commit 5ce82b6: ``whole`` 2,904 after 291 s of
compilation; ``unaligned`` 2,522 against ``base`` (aligned blocks) 2,928; with q_VT's patch
embedding as one product 3,063; ``nosr`` 3,105 against ``base`` 3,351 (SR parts compiled).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch._inductor.config
import torch.nn.functional as F
from gpu_tail_conv import gather_split_conv  # scripts/ is on the path of a script it runs
from torch import nn

import image_bench.engine.bench as bench
from image_bench import losses
from image_bench.accel import aligned_block, attention, image_parts, pixel_shuffle, tail_conv, vit
from image_bench.accel.optimize import compile_regions, configure_cuda
from image_bench.accel.tail_conv import HeadConv2d, TailConv2d
from image_bench.engine import fused_update
from image_bench.engine.env import environment

WRITTEN_OUT = vit.Attention.forward  # the suite's attention (models.attention.attend)


def sdpa_forward(self, x, mask=None):
    """The attention as it was measured first: F.scaled_dot_product_attention (flash kernels)."""
    b, n, d = x.shape
    q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return self.proj(out.transpose(1, 2).reshape(b, n, d))


BUILD = bench.build_bench_model
LAYOUT = bench.training_layout
STREAMS = bench.training_streams
FUSE = bench.fuse_blocks_for_inference


def nchw_order_patch_forward(self, x):
    """vit.PatchEmbed.forward as it was: features in (C, ph, pw) order for any layout."""
    b, c, h, w = x.shape
    ph, pw = self.patch_size
    patches = (x.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5)
               .reshape(b, self.num_tokens, c * ph * pw))
    linear = vit.aligned_linear if self.aligned else F.linear
    return linear(patches, self.proj.weight.flatten(1), self.proj.bias) + self.pos_embed


def separate_bias_block_forward(block, x, mask=None):
    """``aligned_block_forward`` as before 'nobiascol': every bias through F.linear."""
    pad, aligned = aligned_block._pad_last, aligned_block.aligned
    attn, mlp = block.attn, block.mlp
    b, n, d = x.shape
    h = attn.heads
    dh = d // h
    dp, dhp = aligned(d), aligned(dh)
    w_qkv = pad(attn.qkv.weight.unflatten(0, (3, h, dh)), dp)
    w_qkv = F.pad(w_qkv, (0, 0, 0, dhp - dh)).reshape(3 * h * dhp, dp)
    b_qkv = pad(attn.qkv.bias.view(3, h, dh), dhp).reshape(-1)
    y = pad(block.norm1(x), dp)
    heads_out = attention.attend(F.linear(y, w_qkv, b_qkv), h, attn.scale, mask)
    w_proj = F.pad(aligned_block._pad_heads(attn.proj.weight, h, dh, dhp), (0, 0, 0, dp - d))
    x1 = x + F.linear(heads_out, w_proj, pad(attn.proj.bias, dp))[..., :d]
    hid = mlp.fc1.out_features
    hp = aligned(hid)
    w_fc1 = F.pad(pad(mlp.fc1.weight, dp), (0, 0, 0, hp - hid))
    hidden = mlp.act(F.linear(pad(block.norm2(x1), dp), w_fc1, pad(mlp.fc1.bias, hp)))
    w_fc2 = F.pad(pad(mlp.fc2.weight, hp), (0, 0, 0, dp - d))
    return x1 + F.linear(hidden, w_fc2, pad(mlp.fc2.bias, dp))[..., :d]


ALIGNED_FORWARD = vit.aligned_block_forward
SLICED_LINEAR = aligned_block._linear
SPLIT_CONV = tail_conv._SPLIT_CONV
PARTIAL_SUM = aligned_block._PARTIAL_SUM
SPLIT_ROWS = aligned_block.SPLIT_ROWS
PATCH_FORWARD = vit.PatchEmbed.forward
DECODER_FORWARD = image_parts.ConvDecoder.forward
CTC_KERNELS = losses._ctc_kernels
FUSED_SUPPORTS = fused_update.FusedClipAdamW.supports


def plain_linear(x, weight, bias):
    """The aligned blocks' products as before 'nosplitk': F.linear, autograd's weight gradient."""
    return F.linear(x, weight, bias)


def decoder_with_map_grad(self, feature, skip=None, map_grad=True):
    return DECODER_FORWARD(self, feature, skip)
SHUFFLE_FORWARD = pixel_shuffle.ShuffledConv2d.forward


class _ShuffleKeepingLayout(torch.autograd.Function):
    """PixelShuffle whose backward writes the gradient channels_last (``oldshuffle``)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return F.pixel_shuffle(x, scale)

    @staticmethod
    def backward(ctx, grad):
        return (F.pixel_unshuffle(grad, ctx.scale).contiguous(memory_format=torch.channels_last),
                None)


def plain_shuffle_forward(keep_layout: bool):
    def forward(self, x):
        y = nn.Conv2d.forward(self, x)
        if keep_layout and y.is_contiguous(memory_format=torch.channels_last):
            return _ShuffleKeepingLayout.apply(y, self.scale)
        return F.pixel_shuffle(y, self.scale)
    return forward


def use_variant(name: str) -> None:
    old_layout = "oldlayout" in name.split("-")
    vit.PatchEmbed.forward = nchw_order_patch_forward if old_layout else PATCH_FORWARD
    vit.aligned_block_forward = (separate_bias_block_forward if "nobiascol" in name.split("-")
                                 else ALIGNED_FORWARD)
    aligned_block._linear = plain_linear if "nosplitk" in name.split("-") else SLICED_LINEAR
    aligned_block._PARTIAL_SUM = None if "atensum" in name.split("-") else PARTIAL_SUM
    rows = [int(t[4:]) for t in name.split("-") if t.startswith("rows") and t[4:].isdigit()]
    aligned_block.SPLIT_ROWS = rows[0] if rows else SPLIT_ROWS
    losses._ctc_kernels = (lambda emit: None) if "torchctc" in name.split("-") else CTC_KERNELS
    fused_update.FusedClipAdamW.supports = staticmethod(
        (lambda optimizer: False) if "torchadamw" in name.split("-") else FUSED_SUPPORTS)
    image_parts.ConvDecoder.forward = (decoder_with_map_grad if "mapgrad" in name.split("-")
                                       else DECODER_FORWARD)
    shuffle = [t for t in ("nnshuffle", "oldshuffle") if t in name.split("-")]
    pixel_shuffle.ShuffledConv2d.forward = (plain_shuffle_forward(shuffle == ["oldshuffle"])
                                            if shuffle else SHUFFLE_FORWARD)
    vit.Attention.forward = sdpa_forward if "sdpa" in name else WRITTEN_OUT
    attention.set_fused_attention("noattn" not in name.split("-"))
    TailConv2d.split = "cudnntail" not in name
    HeadConv2d.split = "cudnnhead" not in name.split("-")
    tail_conv._SPLIT_CONV = gather_split_conv() if "gathertail" in name.split("-") else SPLIT_CONV
    bench.fuse_blocks_for_inference = (lambda model: 0) if "nofuse" in name else FUSE
    if torch.cuda.is_available():
        from image_bench.accel.kernels import block_kernels

        tokens = name.split("-")
        block_kernels.PDL = False if "nopdl" in tokens else None
        # q16 / a16 / h16: 16-wide tiles for the qkv, attention or MLP launch (default 32)
        block_kernels.BLOCK_N = 16 if "q16" in tokens else 32
        block_kernels.ATTN_BLOCK_N = 16 if "a16" in tokens else 32
        block_kernels.MLP_BLOCK_H = 16 if "h16" in tokens else 32

    def build(*args, **kwargs):
        model = BUILD(*args, **kwargs)
        if "cl" in name.split("-"):  # channels_last weights: cuDNN picks NHWC kernels for the convs
            model.to(memory_format=torch.channels_last)
        return model

    bench.build_bench_model = build
    bench.training_layout = (lambda model, device: False) if "nocl" in name.split("-") else LAYOUT
    bench.training_streams = ((lambda model, device: False) if "nostreams" in name.split("-")
                              else STREAMS)
    mode = "max-autotune-no-cudagraphs" if "autotune" in name else None
    torch._inductor.config.coordinate_descent_tuning = "cdt" in name.split("-")

    def whole(model, sr_parts=False, align=False, combo=False):  # one graph
        torch._dynamo.config.allow_rnn = True  # dynamo must be allowed into nn.GRU
        model.compile(dynamic=False, mode=mode)
        return ["<whole model>"]

    def regions(model, sr_parts=False, align=False, combo=False):
        tokens = name.split("-")  # as the bench calls it, less what the variant turns off
        names = compile_regions(model, mode=mode, sr_parts=sr_parts and "nosr" not in tokens,
                                align=align and "unaligned" not in tokens,
                                combo=combo and mode is None and "nocombo" not in tokens)
        losses.compile_image_loss(sr_parts and "eagerloss" not in tokens)
        return names

    bench.compile_regions = whole if "whole" in name else regions
    torch._dynamo.reset()


def batch1_kernels(model, device, replays: int = 20, top: int = 40) -> dict:
    """Kernels of the batch-1 call as the optimized mode runs it (a bf16 copy, Triton or compiled
    blocks, replayed as a CUDA graph): how many, and the costliest."""
    fast = copy.deepcopy(model).to(torch.bfloat16).eval()
    bench.fuse_blocks_for_inference(fast)
    bench.compile_regions(fast)

    def run(lr):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            return fast(lr).logits

    replay = bench._cuda_graph(run, model.example_input(1).to(device))
    for _ in range(5):
        replay()
    events = bench.profile_kernels(replay, replays, device)
    return {"kernels_per_call": sum(e.count for e in events) / replays,
            "gpu_ms_per_call": sum(e.self_device_time_total for e in events) / 1e3 / replays,
            "top": [{"kernel": e.key[:110], "calls": e.count // replays,
                     "ms": e.self_device_time_total / 1e3 / replays} for e in events[:top]]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("train", "latency"))
    ap.add_argument("--model", default="image-2")
    ap.add_argument("--variants", default="base,sdpa")
    ap.add_argument("--kernels", default="base")
    ap.add_argument("--out", default="runs/explore")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1, help="latency: the inference batch size")
    args = ap.parse_args()
    configure_cuda()
    device = torch.device("cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"env": environment(device), "results": {}, "kernels": {}}
    path = out / f"explore_{args.what}.json"
    for variant in args.variants.split(","):
        use_variant(variant)
        t = time.perf_counter()
        try:
            if args.what == "train":
                r = bench.training_speed(args.model, device, "optimized", 256, args.steps, 3)
            else:
                model = bench.build_bench_model(args.model, None, device)
                r = bench._inference(model, None, device, "optimized", (args.batch,),
                                     200 if args.batch == 1 else 20, 20)
                if variant in args.kernels.split(","):
                    r["kernels"] = batch1_kernels(model, device)
        except Exception as exc:  # noqa: BLE001 - report and go on
            r = {"error": f"{type(exc).__name__}: {exc}"[:600]}
        r["wall_s"] = time.perf_counter() - t
        report["results"][variant] = r
        figure = (r.get("samples_per_s") if args.what == "train"
                  else r.get(f"batch{args.batch}", {}).get("per_image_ms"))
        print(f"{args.model} {args.what} {variant:14s} -> {figure}  ({r['wall_s']:.0f} s) "
              f"{r.get('levers', r.get('error'))}", flush=True)
        if "kernels" in r:
            k = r["kernels"]
            print(f"  {k['kernels_per_call']:.0f} kernels, {k['gpu_ms_per_call']:.3f} ms of GPU "
                  f"time per call; top: " + "; ".join(
                      f"{x['ms']:.3f} ms x{x['calls']} {x['kernel'][:60]}" for x in k["top"]))
        path.write_text(json.dumps(report, indent=1, default=str))
        if args.what == "train" and variant in args.kernels.split(","):
            use_variant(variant)
            rows = bench.top_kernels(args.model, device, top=400)
            report["kernels"][variant] = rows
            print(f"top kernels, {variant}:")
            for k in rows[:30]:
                print(f"  {100 * k['share']:5.1f}%  {k['ms_per_step']:8.3f} ms/step  "
                      f"{k['calls']:6d} calls  {k['kernel']}")
            path.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
