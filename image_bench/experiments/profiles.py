"""Profiles size data and schedules. The profile name is part of every run's identity.

- smoke: CPU, seconds, tiny data; for tests and first contact.
- quick: every table on one H100 within about 20 minutes, data generation included.
- paper: the paper's settings (batch 256 pretraining, 64 fine-tuning, AdamW 1e-4); the paper does
  not give its step counts, so these are the suite's choice for full-length runs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    # data sizes (pairs); TextZoom's real sizes are 14,573 + 2,794 train, 1,619/1,411/1,343 test
    synth_pairs: int
    textzoom_train: tuple[int, int]  # train1, train2
    textzoom_test: tuple[int, int, int]  # easy, medium, hard
    ic15_images: int
    # schedules
    pretrain_steps: int  # on synth ("S")
    pretrain_batch: int
    finetune_steps: int  # on textzoom ("S+L") and STISR training
    finetune_batch: int
    helper_steps: int  # helper networks (stroke recognizer, language model)
    eval_batch: int
    checkpoint_every: int
    validate_every: int
    helper_batch: int = 64  # helper networks (the stroke recognizer and BCN are large: 62M, 30M)


PROFILES = {
    "smoke": Profile("smoke", synth_pairs=2_000, textzoom_train=(400, 100),
                     textzoom_test=(60, 50, 40), ic15_images=32,
                     pretrain_steps=30, pretrain_batch=16, finetune_steps=20, finetune_batch=16,
                     helper_steps=20, eval_batch=32, checkpoint_every=10, validate_every=10),
    "quick": Profile("quick", synth_pairs=500_000, textzoom_train=(14_573, 2_794),
                     textzoom_test=(1_619, 1_411, 1_343), ic15_images=352,
                     pretrain_steps=1_500, pretrain_batch=256, finetune_steps=1_000,
                     finetune_batch=64, helper_steps=800, eval_batch=256,
                     checkpoint_every=250, validate_every=250),
    "paper": Profile("paper", synth_pairs=2_000_000, textzoom_train=(14_573, 2_794),
                     textzoom_test=(1_619, 1_411, 1_343), ic15_images=352,
                     pretrain_steps=60_000, pretrain_batch=256, finetune_steps=30_000,
                     finetune_batch=64, helper_steps=20_000, eval_batch=256,
                     checkpoint_every=2_000, validate_every=2_000),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise KeyError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")
    return PROFILES[name]
