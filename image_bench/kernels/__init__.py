"""Hand-written kernels for the hot spots of the suite.

``bigru`` is pure torch (parameter packing, the autograd Function, a reference recurrence) and
imports anywhere. ``fused_gru`` holds the Triton recurrence and imports triton: only
``image_bench.models.gru`` imports it, lazily, on the first CUDA call. Never import
``fused_gru`` from code that must run on the CPU build of torch.
"""
