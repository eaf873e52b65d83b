"""A run is a fully resolved configuration; the hash of its canonical JSON is its identity.

The experiments layer builds RunConfigs from table specs and profiles; the engine trains exactly
what a RunConfig says and nothing else, so the same config always means the same run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class RunConfig:
    model: str  # registered model name
    data: str  # data set name: synth | textzoom | lexicon (language-model pretraining)
    profile: str  # smoke | quick | paper
    steps: int
    batch_size: int
    seed: int = 0
    # AdamW's rate. The run plan and `image-bench train` write in the model's own (its original's
    # from BenchModel.optim_overrides, else the paper's 1e-4: engine.step.model_lr).
    lr: float = 1e-4
    # How the rate moves over the run (engine.step.LR_SCHEDULES): "constant" (the paper's, and
    # the default, left out of the identity so that runs from before the field keep their keys)
    # or "cosine" (to zero at the last step). The run plan writes in the model's own.
    lr_schedule: str = "constant"
    model_kwargs: dict = field(default_factory=dict)
    # The run whose final weights initialise this one (pretraining S -> fine-tuning S+L).
    init_from: RunConfig | None = None
    # role -> run of a helper network the model needs (BenchModel.requires).
    helpers: dict[str, RunConfig] = field(default_factory=dict)
    data_identity: str = ""  # content hash of the training data, filled when the data is resolved

    def to_dict(self) -> dict:
        d = asdict(self)
        d["init_from"] = self.init_from.to_dict() if self.init_from else None
        d["helpers"] = {role: cfg.to_dict() for role, cfg in sorted(self.helpers.items())}
        if d["lr_schedule"] == "constant":
            del d["lr_schedule"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        d = dict(d)
        d["init_from"] = cls.from_dict(d["init_from"]) if d.get("init_from") else None
        d["helpers"] = {role: cls.from_dict(h) for role, h in (d.get("helpers") or {}).items()}
        return cls(**d)

    def key(self) -> str:
        """Stable identity: sha256 of the canonical JSON, first 16 hex digits."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_(self, **changes) -> RunConfig:
        return replace(self, **changes)
