"""Profiles size data and schedules. The profile name is part of every run's identity.

- smoke: CPU, seconds, tiny data; for tests and first contact.
- quick: every table on one H200 in about 30 minutes, data generation included.
- paper: the paper's settings (batch 256 pretraining, 64 fine-tuning, AdamW 1e-4); the paper does
  not give its step counts, so these are the suite's choice for full-length runs.
"""

from __future__ import annotations

from dataclasses import dataclass

# Where `run`, `ablate`, `report` and `figure` keep the store and tables unless told otherwise: a
# git-ignored folder, so a first smoke run cannot overwrite the committed GPU results in
# results/ (publish there with --results results).
DEFAULT_RESULTS = "runs/results"


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
    finetune_steps: int  # on textzoom ("S+L")
    finetune_batch: int  # S+L fine-tuning and STISR training
    stisr_steps: int  # TG, TPGSR, C3-STISR trained from scratch on textzoom
    helper_steps: int  # helper networks (stroke recognizer, language model)
    eval_batch: int
    checkpoint_every: int
    validate_every: int
    helper_batch: int = 64  # helper networks (the stroke recognizer and BCN are large: 62M, 30M)


PROFILES = {
    # smoke: the whole reproduction (17 trainings of full-size models, 26 evaluations, 9 cost
    # counts, 6 latency runs) on 2 busy CPU cores in minutes. Full-size models train at about
    # 1-10 samples/s there, so a run is a few steps of a few images: numbers are meaningless,
    # the pipeline is not.
    "smoke": Profile("smoke", synth_pairs=512, textzoom_train=(96, 32),
                     textzoom_test=(12, 10, 8), ic15_images=8,
                     pretrain_steps=3, pretrain_batch=4, finetune_steps=2, finetune_batch=4,
                     stisr_steps=2, helper_steps=2, eval_batch=16, checkpoint_every=2,
                     validate_every=3, helper_batch=4),
    # quick: every table on one H200 in about 30 minutes, data included, over resumable calls of
    # 10 minutes. Sized from validation curves on the GPU; docs/schedules.md gives the runs and
    # their numbers. Far shorter than the paper's schedules: every caption says "quick".
    "quick": Profile("quick", synth_pairs=300_000, textzoom_train=(14_573, 2_794),
                     textzoom_test=(1_619, 1_411, 1_343), ic15_images=352,
                     pretrain_steps=3_000, pretrain_batch=256, finetune_steps=1_000,
                     finetune_batch=64, stisr_steps=2_500, helper_steps=800, eval_batch=256,
                     checkpoint_every=250, validate_every=250, helper_batch=64),
    "paper": Profile("paper", synth_pairs=2_000_000, textzoom_train=(14_573, 2_794),
                     textzoom_test=(1_619, 1_411, 1_343), ic15_images=352,
                     pretrain_steps=60_000, pretrain_batch=256, finetune_steps=30_000,
                     finetune_batch=64, stisr_steps=30_000, helper_steps=20_000, eval_batch=256,
                     checkpoint_every=2_000, validate_every=2_000),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise KeyError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")
    return PROFILES[name]
