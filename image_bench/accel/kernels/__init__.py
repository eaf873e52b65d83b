"""Hand-written kernels for the hot spots of the suite.

``bigru`` is pure torch (parameter packing, the autograd Function, a reference recurrence) and
imports anywhere. The Triton modules import triton, and each is imported by the one accel module
that uses it: at that module's import where CUDA is present (:func:`cuda_triton_module`) for
kernels that run inside compiled regions, lazily on the first CUDA call for the others:

- ``fused_gru``: the SRBs' bidirectional GRU (``accel.gru``);
- ``shifted_planes``: the shifted sum behind the split SR tails and their backward
  (``accel.tail_conv``);
- ``partial_sum``: the sum of the aligned blocks' sliced weight-gradient partials
  (``accel.aligned_block``);
- ``short_attention``: the transformer blocks' attention on CUDA (``accel.attention``);
- ``ctc``: the CTC loss's alpha and beta recursions (``losses.ctc_nll``, installed by
  ``accel.fast_losses``, lazily);
- ``block_kernels``: a transformer block in three launches for small-batch inference
  (``accel.fused_block``, lazily);
- ``adamw``: gradient clipping + AdamW over all parameters in three launches
  (``accel.fused_update``, lazily).

Never import them from code that must run on the CPU build of torch.
"""

import functools
import importlib
import warnings


@functools.cache
def triton_module(name: str):
    """``image_bench.accel.kernels.<name>``, imported on first use; None, with one warning, where
    triton is missing (the CPU build of torch), so the caller keeps its torch path."""
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ImportError as err:
        warnings.warn(f"Triton kernels {__name__}.{name} unavailable ({err}); the torch path runs "
                      "instead", stacklevel=3)
        return None


def cuda_triton_module(name: str):
    """:func:`triton_module` where CUDA is present, else None, for a module to call at its own
    import. Kernels that run inside compiled regions must be loaded so, not on their first call:
    that call usually happens inside dynamo's trace, where the import is a graph break (an SRB
    compiled to 5 graphs that way, 1 once the kernels were loaded; H100, torch._dynamo.explain,
    scripts/gpu_explain_regions.py)."""
    import torch

    return triton_module(name) if torch.cuda.is_available() else None
