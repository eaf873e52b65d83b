"""Profiles size data and schedules. The profile name is part of every run's identity.

- smoke: CPU, seconds, tiny data; for tests and first contact.
- quick: every table on one H100 within about 20 minutes, data generation included.
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
    finetune_steps: int  # on textzoom ("S+L") and STISR training
    finetune_batch: int
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
                     helper_steps=2, eval_batch=16, checkpoint_every=2, validate_every=3,
                     helper_batch=4),
    # quick: one H100, sized for about 20 minutes with data generation (measured: 17.7 minutes of
    # `run all` in two calls at 0f4414f, where IMAGE-2 pretrained at ~3,500 samples/s; 18.0 at
    # 0e58a6f (~3,100 samples/s); 19.1 at 03511bd, 21.3 at 61180b9; since 61180b9 a cut saves
    # the step in flight, SVTR trains uncompiled at this length, and synth is 300k pairs, not
    # 500k: an S run draws 1,000 x 256 = 256k, so it still sees no pair twice) from measured H100
    # speeds (bf16, compiled transformer blocks, split SR tails, the whole step replayed as a CUDA
    # graph; image-bench bench, scripts/gpu_step.py, gpu_explore.py): training samples/s at batch
    # 256 IMAGE-2 ~2,590, IMAGE-1 ~3,850, CRNN ~20,500, SVTR ~9,200, TPGSR ~5,400, C3-STISR ~2,200.
    # Steps: at the paper's lr (1e-4) CRNN leaves CTC's all-blank phase after ~500 steps of 256
    # and IMAGE-1 after ~650 (val accuracy 0 until then; 200 steps, the first quick schedule,
    # left every recognizer at 0%), so S pretraining takes 1,000 steps; lr 5e-4 kept IMAGE-1 at
    # 0% for 1,000 steps. Budget: data ~1.3 min; the four IMAGE S runs ~8 min;
    # everything else ~10 min (fine-tuning 500 x 64, helpers 500 x 64, evaluation, costs,
    # latency, figures). Far shorter than the paper's schedules: the models are undertrained
    # and the tables say so (profile "quick" in every caption).
    "quick": Profile("quick", synth_pairs=300_000, textzoom_train=(14_573, 2_794),
                     textzoom_test=(1_619, 1_411, 1_343), ic15_images=352,
                     pretrain_steps=1_000, pretrain_batch=256, finetune_steps=500,
                     finetune_batch=64, helper_steps=500, eval_batch=256,
                     checkpoint_every=250, validate_every=250, helper_batch=64),
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
