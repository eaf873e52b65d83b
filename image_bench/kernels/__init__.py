"""Hand-written kernels for the hot spots of the suite.

``bigru`` is pure torch (parameter packing, the autograd Function, a reference recurrence) and
imports anywhere. The Triton modules import triton, and each is imported lazily, on the first
CUDA call, by the one model module that uses it:

- ``fused_gru``: the SRBs' bidirectional GRU (``models.gru``);
- ``shifted_planes``: the shifted sum behind the split SR tails (``models.tail_conv``);
- ``block_kernels``: a transformer block in four launches for small-batch inference
  (``models.fused_block``).

Never import them from code that must run on the CPU build of torch.
"""
