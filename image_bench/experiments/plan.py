"""The runs the paper's tables need, as RunConfigs, for one profile and one seed.

Stages (the paper's Section 4.1 and the originals' practice):

- ``S``: pretraining on ``synth`` with the profile's pretraining schedule (recognizers read HR,
  ``lr_fraction`` 0; IMAGE trains on synth LR-HR pairs).
- ``S+L``: the S run's weights fine-tuned on ``textzoom`` (recognizers read LR or HR half and half,
  ``lr_fraction`` 0.5).
- ``aux``: helper networks trained on ``synth`` (TG's stroke recognizer, C3-STISR's language model).
- ``STISR``: TG, TPGSR and C3-STISR trained from scratch on textzoom LR-HR pairs, their helper
  networks attached frozen or as initialisation (TPGSR/C3's text-prior CRNN is the S-trained CRNN,
  as the originals start from the synth-trained crnn.pth).

Every run that several rows share is one RunConfig, so it has one key and is trained once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from image_bench.experiments.config import RunConfig
from image_bench.profiles import Profile

AUX_MODELS = ("tg-stroke", "bcn")


def model_defaults(model: str) -> dict:
    """The RunConfig fields a run of ``model`` takes unless it sets them: its learning rate and
    schedule (its original's, or the paper's) and, in ``model_kwargs``, its STN setting. All
    are named in the run's key, so a run trained under one default is never taken for a run of
    another after the default changes. The run plan and ``image-bench train`` both start here."""
    from image_bench.engine.step import model_lr, model_lr_schedule
    from image_bench.models.base import model_class

    cls = model_class(model)
    stn = getattr(cls, "stn_default", None)
    return {"lr": model_lr(cls), "lr_schedule": model_lr_schedule(cls),
            "model_kwargs": {} if stn is None else {"stn": stn}}


@dataclass
class Plan:
    profile: Profile
    seed: int
    # data name -> content hash of its training splits (fills RunConfig.data_identity)
    identity: Callable[[str], str]

    def _cfg(self, model: str, data: str, steps: int, batch: int, **extra) -> RunConfig:
        defaults = model_defaults(model)
        extra["model_kwargs"] = {**defaults.pop("model_kwargs"), **extra.get("model_kwargs", {})}
        return RunConfig(model=model, data=data, profile=self.profile.name, steps=steps,
                         batch_size=batch, seed=self.seed, data_identity=self.identity(data),
                         **{**defaults, **extra})

    # -- recognizers --------------------------------------------------------------------------
    def recognizer(self, name: str, stage: str) -> RunConfig:
        p = self.profile
        pre = self._cfg(name, "synth", p.pretrain_steps, p.pretrain_batch,
                        model_kwargs={"lr_fraction": 0.0})
        if stage == "S":
            return pre
        if stage == "S+L":
            return self._cfg(name, "textzoom", p.finetune_steps, p.finetune_batch,
                             model_kwargs={"lr_fraction": 0.5}, init_from=pre)
        raise ValueError(f"unknown stage {stage!r}; known: S, S+L")

    # -- helpers and STISR ----------------------------------------------------------------------
    def aux(self, name: str) -> RunConfig:
        if name not in AUX_MODELS:
            raise ValueError(f"unknown helper network {name!r}; known: {', '.join(AUX_MODELS)}")
        p = self.profile
        return self._cfg(name, "synth", p.helper_steps, p.helper_batch)

    def stisr(self, name: str, **model_kwargs) -> RunConfig:
        """An STISR model trained on textzoom; ``model_kwargs`` its switches (``stn``)."""
        p = self.profile
        helpers = {
            "tg": {"stroke": self.aux("tg-stroke")},
            "tpgsr": {"recognizer": self.recognizer("crnn", "S")},
            "c3stisr": {"recognizer": self.recognizer("crnn", "S"),
                        "language_model": self.aux("bcn")},
        }
        if name not in helpers:
            raise ValueError(f"unknown STISR method {name!r}; known: {', '.join(helpers)}")
        return self._cfg(name, "textzoom", p.stisr_steps, p.finetune_batch,
                         helpers=helpers[name], model_kwargs=dict(model_kwargs))

    # -- IMAGE ----------------------------------------------------------------------------------
    def image(self, iterations: int, stage: str, **model_kwargs) -> RunConfig:
        """IMAGE-L; ``model_kwargs`` carries Table 4's switches (guidance, clue_losses), each
        ablation pretrained and fine-tuned on the same schedule as the full model."""
        p = self.profile
        name = f"image-{iterations}"
        pre = self._cfg(name, "synth", p.pretrain_steps, p.pretrain_batch,
                        model_kwargs=dict(model_kwargs))
        if stage == "S":
            return pre
        if stage == "S+L":
            return self._cfg(name, "textzoom", p.finetune_steps, p.finetune_batch,
                             model_kwargs=dict(model_kwargs), init_from=pre)
        raise ValueError(f"unknown stage {stage!r}; known: S, S+L")


def stage_of(cfg: RunConfig) -> str:
    """The stage a run belongs to, for wall-time accounting (issue 8 reports time per stage)."""
    if cfg.model in AUX_MODELS:
        return "aux"
    if cfg.init_from is not None:
        return "S+L"
    if cfg.data == "synth":
        return "S"
    return "STISR"
