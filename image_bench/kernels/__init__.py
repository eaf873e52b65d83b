"""Hand-written kernels for the hot spots of the suite.

``bigru`` is pure torch (parameter packing, the autograd Function, a reference recurrence) and
imports anywhere. The Triton modules import triton, and each is imported lazily, on the first
CUDA call, by the one model module that uses it:

- ``fused_gru``: the SRBs' bidirectional GRU (``models.gru``);
- ``shifted_planes``: the shifted sum behind the split SR tails (``models.tail_conv``);
- ``block_kernels``: a transformer block in three launches for small-batch inference
  (``models.fused_block``).

Never import them from code that must run on the CPU build of torch.
"""

import functools
import importlib
import warnings


@functools.cache
def triton_module(name: str):
    """``image_bench.kernels.<name>``, imported on first use; None, with one warning, where triton
    is missing (the CPU build of torch), so the caller keeps its torch path."""
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ImportError as err:
        warnings.warn(f"Triton kernels {__name__}.{name} unavailable ({err}); the torch path runs "
                      "instead", stacklevel=3)
        return None
