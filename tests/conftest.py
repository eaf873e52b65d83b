"""Shared test settings.

Tests run tiny models on small CPU machines (CI has 2 cores). With torch's default thread pool
the small ops of these models spend more time synchronising threads than computing (measured
here: one TG step 60 s with two threads on a loaded machine, 2 s with one), so every test runs
single-threaded.
"""

import torch

torch.set_num_threads(1)
