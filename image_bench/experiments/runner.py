"""Turns table rows into store records: trains, evaluates, counts and times only what is missing.

``Runner(compute=True)`` is what ``image-bench run`` drives; ``Runner(compute=False)`` only reads
the store and answers None for what is missing (``image-bench report``). Both compute the same keys,
so a report shows exactly the records a run wrote.

Layout under a results directory ``R`` (default ``./results``):

- ``R/store/<key>.json``: the records (committed);
- ``R/data_index.json``: the identity (source, content hash) of every data set the records used, so
  a report can name the data without regenerating it;
- ``R/stages.jsonl``: wall time per stage of every ``run`` session (appended);
- checkpoints under ``$IMAGE_BENCH_RUNS`` or ``R/../runs/<key>/`` (git-ignored).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from rich.markup import escape

from image_bench.engine.evaluate import Bicubic
from image_bench.experiments.config import RunConfig
from image_bench.experiments.plan import Plan, stage_of
from image_bench.experiments.provenance import provenance
from image_bench.experiments.store import RunStore, StoreError, atomic_write_text, spec_key
from image_bench.experiments.tables import TEST_SPLITS, Method
from image_bench.profiles import Profile, get_profile

TRAIN_SPLITS = {"synth": ("train", "val"), "textzoom": ("train", "val")}
TRAINING_ONLY_KWARGS = ("lr_fraction", "clue_losses")
EVAL_VERSION = 1  # bump when the evaluation protocol changes, so old eval records stop matching


def runs_dir_for(results: Path) -> Path:
    env = os.environ.get("IMAGE_BENCH_RUNS")
    return Path(env) if env else results.resolve().parent / "runs"


def _jsonable(obj):
    """Evaluator output to plain JSON: tensors/numpy to floats; per-image lists dropped (they
    belong in run folders, not in committed records)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if not str(k).endswith("_per_image")}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class DataIndex:
    """Identity of each named data set (per profile and source), resolved once and kept in
    ``R/data_index.json`` beside the store."""

    def __init__(self, results: Path, profile: str, data_root: str | None, *, resolve=None,
                 stage=None):
        self.path = results / "data_index.json"
        self.profile = profile
        self.data_root = data_root or os.environ.get("IMAGE_BENCH_DATA")
        self._resolve = resolve
        self._stage = stage or (lambda name: nullcontext())  # times first resolutions (data made)
        self._memo: dict[str, dict] = {}

    def _slot(self, name: str) -> str:
        return f"{name}|{self.profile}|{self.data_root or 'stand-in'}"

    def resolve(self, name: str, split: str):
        if self._resolve is None:
            from image_bench.data.datasets import resolve

            self._resolve = resolve
        return self._resolve(name, split, self.profile, data_root=self.data_root)

    def info(self, name: str, splits: tuple[str, ...]) -> dict:
        """{'hash': combined content hash, 'source': ..., 'splits': {split: identity}}."""
        slot = self._slot(name) + "|" + ",".join(splits)
        if slot in self._memo:
            return self._memo[slot]
        index = self._read()
        if slot not in index:
            with self._stage("data"):
                ids = {s: dict(self.resolve(name, s).identity) for s in splits}
            blob = json.dumps([ids[s].get("hash") for s in splits])
            index[slot] = {
                "name": name, "hash": hashlib.sha256(blob.encode()).hexdigest()[:16],
                "source": sorted({str(i.get("source", "?")) for i in ids.values()}),
                "splits": {s: {k: v for k, v in i.items() if k != "path"}
                           for s, i in ids.items()}}
            self._write_entry(slot, index[slot])
        self._memo[slot] = index[slot]
        return index[slot]

    def train_hash(self, name: str) -> str:
        return self.info(name, TRAIN_SPLITS.get(name, ("train",)))["hash"]

    def known(self) -> dict:
        return self._read()

    def _read(self) -> dict:
        if not self.path.exists():
            return {}
        try:
            return json.loads(self.path.read_text())
        except json.JSONDecodeError as e:
            raise RuntimeError(f"corrupt data index {self.path}: {e}; delete it to rebuild") from e

    def _write_entry(self, slot: str, entry: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            index = self._read()
            index[slot] = entry
            atomic_write_text(self.path, json.dumps(index, indent=1, sort_keys=True) + "\n")


class Runner:
    """The Source of table numbers (see tables.Source)."""

    def __init__(self, results: str | os.PathLike, profile: str | Profile, *, compute: bool,
                 device: str | None = None, data_root: str | None = None, seed: int = 0,
                 compile: bool = True, progress: bool = True, console=None, resolve=None):
        self.results = Path(results)
        self.profile = profile if isinstance(profile, Profile) else get_profile(profile)
        self.store = RunStore(self.results / "store")
        self.runs = runs_dir_for(self.results)
        self.compute = compute
        self.device = device
        self.compile = compile
        self.progress = progress
        self.console = console
        self.stage_wall: dict[str, float] = defaultdict(float)
        self._open_stages: list[list] = []  # [name, time charged up to] of nested stages
        self.data = DataIndex(self.results, self.profile.name, data_root, resolve=resolve,
                              stage=self.stage)
        self.seed = seed
        self._models: dict[str, torch.nn.Module] = {}
        self._cost_memo: dict[str, dict | None] = {}
        self.touched: list[dict] = []  # records behind the numbers handed out (for captions)

    def _touch(self, record: dict | None) -> dict | None:
        if record is not None and all(r["key"] != record["key"] for r in self.touched):
            self.touched.append(record)
        return record

    # -- plumbing ------------------------------------------------------------------------------
    def plan(self, seed: int | None = None) -> Plan:
        seed = self.seed if seed is None else seed
        if self.compute:
            return Plan(self.profile, seed, self.data.train_hash)
        # Report mode: identities come from the index only; a data set never indexed means no
        # run used it, so every key that needs it is missing anyway.
        def known_hash(name):
            slot = self.data._slot(name) + "|" + ",".join(TRAIN_SPLITS.get(name, ("train",)))
            return self.data.known().get(slot, {}).get("hash", "unresolved")
        return Plan(self.profile, seed, known_hash)

    def say(self, msg: str) -> None:
        if self.console is not None:
            self.console.print(msg)

    @contextmanager
    def stage(self, name: str):
        """Charge the wall time inside to ``name``. Nested stages charge the innermost one (a
        data set generated during a training run counts as data), so stages add up to the
        total."""
        def charge(now: float) -> None:
            if self._open_stages:
                top = self._open_stages[-1]
                self.stage_wall[top[0]] += now - top[1]
                top[1] = now

        now = time.perf_counter()
        charge(now)
        self._open_stages.append([name, now])
        try:
            yield
        finally:
            now = time.perf_counter()
            charge(now)
            self._open_stages.pop()
            if self._open_stages:  # the enclosing stage's clock runs again
                self._open_stages[-1][1] = now

    def run_dir(self, cfg: RunConfig) -> Path:
        return self.runs / cfg.key()

    # -- training --------------------------------------------------------------------------------
    def checkpoint(self, cfg: RunConfig) -> Path:
        """Train ``cfg`` (and what it needs) unless the store holds it and its checkpoint exists;
        return the checkpoint. Two processes never train one run at once (per-key lock)."""
        key = cfg.key()
        record = self.store.get(key)
        if record is not None:
            ckpt = self.runs / record["result"]["checkpoint"]
            if ckpt.exists():
                return ckpt
            if not self.compute:
                raise StoreError(f"run {key} ({cfg.model}) is recorded but its checkpoint {ckpt} "
                                 "is missing (checkpoints are not committed); `image-bench run` "
                                 "trains it again")
            self.say(f"[yellow]run {key} ({cfg.model}) is recorded but its checkpoint {ckpt} is "
                     "missing; training it again (the record is kept)[/]")
        elif not self.compute:
            raise StoreError(f"the store has no run {key} ({cfg.model} on {cfg.data}); "
                             f"`image-bench run` trains it")
        init = self.checkpoint(cfg.init_from) if cfg.init_from is not None else None
        helpers = {role: self.checkpoint(h) for role, h in sorted(cfg.helpers.items())}
        with self.store.lock(key):
            record = self.store.get(key)  # another process may have finished it meanwhile
            if record is not None and (self.runs / record["result"]["checkpoint"]).exists():
                return self.runs / record["result"]["checkpoint"]
            from image_bench.engine.train import train_run

            run_dir = self.run_dir(cfg)
            resumed = run_dir.exists() and any(run_dir.glob("*.pt"))
            stage = stage_of(cfg)
            self.say(f"[bold]train[/] {cfg.model} {escape(f'[{stage}]')} on {cfg.data}, "
                     f"{cfg.steps} steps x {cfg.batch_size}, seed {cfg.seed} -> runs/{key}"
                     + (" (resuming)" if resumed else ""))
            t0 = time.perf_counter()
            with self.stage(f"train {stage}"):
                ckpt = Path(train_run(cfg, run_dir, init_checkpoint=init,
                                      helper_checkpoints=helpers or None, device=self.device,
                                      compile=self.compile, progress=self.progress))
            wall = time.perf_counter() - t0
            result = {"checkpoint": str(ckpt.resolve().relative_to(self.runs.resolve())),
                      "stage": stage, "resumed": resumed}
            log = run_dir / "log.jsonl"
            if log.exists():  # the last logged line: final losses / validation, when present
                lines = log.read_text().strip().splitlines()
                if lines:
                    try:
                        result["last_log"] = json.loads(lines[-1])
                    except json.JSONDecodeError:
                        pass
            ident = self.data.info(cfg.data, TRAIN_SPLITS.get(cfg.data, ("train",)))
            self.store.put(key, "train", cfg.to_dict(), _jsonable(result),
                           provenance(device=self.device, profile=cfg.profile, seed=cfg.seed,
                                      wall_s=wall, data=ident, stage=stage))
            return ckpt

    def model(self, cfg: RunConfig):
        key = cfg.key()
        if key not in self._models:
            from image_bench.engine.checkpoint import load_model

            helpers = {role: self.checkpoint(h) for role, h in sorted(cfg.helpers.items())}
            self._models[key] = load_model(cfg, self.checkpoint(cfg),
                                           device=self.device or _default_device(),
                                           helper_checkpoints=helpers or None)
        return self._models[key]

    # -- evaluation ------------------------------------------------------------------------------
    @staticmethod
    def eval_splits(method: Method) -> tuple[str, ...]:
        return (method.split,) if method.split else TEST_SPLITS[method.data]

    def eval_spec(self, method: Method) -> dict:
        splits = self.eval_splits(method)
        if self.compute:
            data_hash = self.data.info(method.data, splits)["hash"]
        else:
            slot = self.data._slot(method.data) + "|" + ",".join(splits)
            data_hash = self.data.known().get(slot, {}).get("hash", "unresolved")
        spec = {"what": "eval", "version": EVAL_VERSION, "profile": self.profile.name,
                "method": method.run.key() if method.run else "bicubic",
                "reader": method.reader.key() if method.reader else None,
                "data": method.data, "data_hash": data_hash}
        if method.split:  # test-split records keep their keys
            spec["split"] = method.split
        return spec

    def evaluation(self, method: Method) -> dict | None:
        spec = self.eval_spec(method)
        key = spec_key(spec)
        record = self._touch(self.store.get(key))
        for cfg in (method.run, method.reader):
            if cfg is not None:
                self._touch(self.store.get(cfg.key()))
        if record is not None or not self.compute:
            return None if record is None else record["result"]
        model = Bicubic() if method.run is None else self.model(method.run)
        reader = self.model(method.reader) if method.reader is not None else None
        with self.store.lock(key):
            record = self.store.get(key)
            if record is not None:
                return record["result"]
            what = "bicubic LR" if method.run is None else method.run.model
            if method.reader is not None:
                what += f" read by {method.reader.model}"
            self.say(f"[bold]eval[/] {what} on {method.data}"
                     + (f" ({method.split})" if method.split else ""))
            splits = {s: self.data.resolve(method.data, s) for s in self.eval_splits(method)}
            t0 = time.perf_counter()
            from image_bench.engine.evaluate import evaluate

            with self.stage("evaluate"):
                result = evaluate(model, splits, recognizer=reader,
                                  batch_size=self.profile.eval_batch, device=self.device)
            record = self.store.put(
                key, "eval", spec, _jsonable(result),
                provenance(device=self.device, profile=self.profile.name,
                           seed=method.run.seed if method.run else None,
                           wall_s=time.perf_counter() - t0,
                           data=self.data.info(method.data, self.eval_splits(method))))
            self._touch(record)
            for cfg in (method.run, method.reader):
                if cfg is not None:
                    self._touch(self.store.get(cfg.key()))
            return record["result"]

    # -- cost and latency --------------------------------------------------------------------------
    def cost(self, cfg: RunConfig) -> dict | None:
        """Params and FLOPs depend on the architecture only: keyed by model name and kwargs."""
        # Kwargs that change only training (which images a recognizer reads, which outputs are
        # supervised) leave the architecture as is: one cost record serves all of them.
        arch = {k: v for k, v in cfg.model_kwargs.items() if k not in TRAINING_ONLY_KWARGS}
        spec = {"what": "cost", "model": cfg.model, "model_kwargs": arch}
        key = spec_key(spec)
        if key in self._cost_memo:
            return self._cost_memo[key]
        record = self.store.get(key)
        if record is None and self.compute:
            from image_bench.metrics.cost import count_cost
            from image_bench.models.base import build

            with self.store.lock(key):
                record = self.store.get(key)
                if record is None:
                    self.say(f"[bold]cost[/] {cfg.model} {escape(str(arch or ''))}")
                    t0 = time.perf_counter()
                    with self.stage("cost"):
                        result = cost_with_parts(build(cfg.model, **arch),
                                                 count_cost)
                    record = self.store.put(
                        key, "cost", spec, _jsonable(result),
                        provenance(device="cpu", profile=self.profile.name, seed=None,
                                   wall_s=time.perf_counter() - t0))
        self._touch(record)
        self._cost_memo[key] = None if record is None else record["result"]
        return self._cost_memo[key]

    def _bench_from_other_device(self, name: str) -> dict | None:
        """Report mode: latency is measured where the runs ran (the GPU), and the report is often
        written elsewhere. Take this profile's newest bench record of the model from any device;
        the table's caption names the device from the record's provenance."""
        same = [r for r in self.store.records("bench")
                if r["spec"].get("model") == name and r["spec"].get("profile") == self.profile.name]
        return max(same, key=lambda r: r["provenance"].get("created", ""), default=None)

    def bench_spec(self, name: str) -> dict:
        from image_bench.experiments.provenance import device_name

        return {"what": "bench", "model": name, "profile": self.profile.name,
                "device": device_name(self.device)}

    def bench(self, name: str) -> dict | None:
        spec = self.bench_spec(name)
        key = spec_key(spec)
        record = self.store.get(key)
        if record is None and not self.compute:
            record = self._bench_from_other_device(name)
        if record is None and self.compute:
            from image_bench.engine.bench import bench_model

            with self.store.lock(key):
                record = self.store.get(key)
                if record is None:
                    self.say(f"[bold]bench[/] {name}")
                    t0 = time.perf_counter()
                    with self.stage("bench"):
                        result = bench_model(name, device=self.device, **bench_options(
                            self.device))
                    record = self.store.put(
                        key, "bench", spec, _jsonable(normalise_bench(result)),
                        provenance(device=self.device, profile=self.profile.name, seed=None,
                                   wall_s=time.perf_counter() - t0))
        self._touch(record)
        return None if record is None else record["result"]

    # -- session log -------------------------------------------------------------------------------
    def write_stage_log(self, command: str, total_s: float, outcome: str = "done") -> Path:
        """Append this session's wall time per stage. ``outcome``: done, error or stopped (a
        stop signal or an exception; a rerun resumes), so that the sessions of one reproduction
        cut into several calls add up."""
        path = self.results / "stages.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = provenance(device=self.device, profile=self.profile.name, seed=None,
                           wall_s=total_s, command=command, outcome=outcome,
                           stages={k: round(v, 2) for k, v in sorted(self.stage_wall.items())})
        with open(path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return path



def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def bench_options(device: str | None) -> dict:
    """Table 2 needs batch-1 latency only: no training speed. On a GPU both modes and batch 256
    throughput; on a CPU (smoke) eager batch 1 only, as compiling every model there would take
    longer than the whole smoke reproduction."""
    on_gpu = (device or _default_device()).startswith("cuda")
    if on_gpu:
        return {"train": False, "modes": ("eager", "optimized"), "batch_sizes": (1, 256)}
    return {"train": False, "modes": ("eager",), "batch_sizes": (1,)}


def normalise_bench(result: dict) -> dict:
    """Keep the engine's bench dict and add the numbers Table 2 reads under fixed names:
    ``latency_ms_<mode>`` = median batch-1 time per image."""
    out = dict(result)
    for mode, entry in (result.get("modes") or {}).items():
        inference = (entry or {}).get("inference") or {}
        batch1 = inference.get("batch1") or {}
        if "per_image_ms" in batch1:
            out[f"latency_ms_{mode}"] = batch1["per_image_ms"]
        elif "error" in inference:
            out[f"latency_error_{mode}"] = inference["error"]
    return out


def cost_with_parts(model, count_cost) -> dict:
    """count_cost, plus ``parts``: MACs of IMAGE's SR and recognition models (Table 4), from its
    ``model_parts()`` prefixes, counted in the same fvcore trace as Table 5's ``cost_groups()``."""
    parts = model.model_parts() if hasattr(model, "model_parts") else {}
    if not parts:
        return count_cost(model)
    groups = model.cost_groups() if hasattr(model, "cost_groups") else {}
    tag = "part: "
    # An instance attribute shadows the method for this one call: one trace serves both splits.
    model.cost_groups = lambda: {**groups, **{tag + k: v for k, v in parts.items()}}
    try:
        result = count_cost(model)
    finally:
        del model.cost_groups
    for key in ("groups", "groups_paper_compatible"):
        merged = result.get(key) or {}
        result[key] = {k: v for k, v in merged.items() if not k.startswith(tag)}
        if key == "groups":
            result["parts"] = {k[len(tag):]: v for k, v in merged.items() if k.startswith(tag)}
    if groups:
        result["groups_residual"] = result["flops"] - sum(result["groups"].values())
    else:
        result.pop("groups", None)
        result.pop("groups_paper_compatible", None)
        result.pop("groups_residual", None)
    return result
