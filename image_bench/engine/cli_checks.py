"""Checks of the command-line values of ``train``, ``eval`` and ``read``, made before anything is
created: a bad model name, ``--set`` key or value, or ``--data`` gives a one-line usage error
(``image_bench.usage``, exit 2) instead of a traceback from deep inside the trainer, and no run
folder is left behind.

``--set KEY=VALUE`` values are JSON (a bare word is a string). A key is a RunConfig field from
``CONFIG_FIELDS`` or a keyword of the model's constructor; a value must have the type of the
field, or of the keyword's default (an int is accepted where a float is expected, and stored as a
float; a list where the default is a tuple).
"""

from __future__ import annotations

import inspect
import json
import typing
from pathlib import Path

from image_bench.usage import UsageError

# RunConfig fields that --set may change; model, data and profile are arguments of their own,
# and the rest (init_from, helpers, data_identity) are filled in by the suite.
CONFIG_FIELDS = ("steps", "batch_size", "seed", "lr", "lr_schedule")
POSITIVE_FIELDS = ("steps", "batch_size")


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare string: --set model=crnn


def check_model(name: str):
    """The registered model class (or factory) called ``name``."""
    from image_bench.models.base import available, model_class

    try:
        return model_class(name)
    except KeyError:
        raise UsageError(f"unknown model {name!r}; known: {', '.join(available())}") from None


def check_profile(name: str):
    from image_bench.profiles import PROFILES

    if name not in PROFILES:
        raise UsageError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")
    return PROFILES[name]


def model_parameters(factory) -> dict[str, inspect.Parameter]:
    """Keyword parameters a model's constructor takes, following ``**kwargs`` up the classes.

    IMAGE's variants take ``**kwargs`` and hand them to IMAGE's ``__init__``, whose keywords are
    the real ones.
    """
    chain = [c.__init__ for c in factory.__mro__] if inspect.isclass(factory) else [factory]
    params: dict[str, inspect.Parameter] = {}
    for function in chain:
        if function is object.__init__:
            break
        signature = inspect.signature(function)
        for name, p in signature.parameters.items():
            if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                params.setdefault(name, p)
        if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            break
    return params


def _type_name(t) -> str:
    return getattr(t, "__name__", str(t))


def check_type(key: str, value, expected):
    """``value`` converted to ``expected`` (a type, or the default it must resemble)."""
    if isinstance(expected, (tuple, list)):  # a sequence default: a list of the same kind
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"--set {key}={json.dumps(value)}: expected a list like "
                             f"{json.dumps(list(expected))}")
        item = type(expected[0]) if expected else None
        return [check_type(f"{key}[{i}]", v, item) if item else v for i, v in enumerate(value)]
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(expected)
    if ok is None:
        return value  # a type the command line cannot check
    if not ok:
        raise UsageError(f"--set {key}={json.dumps(value)}: expected {_type_name(expected)}, "
                         f"got {_type_name(type(value))}")
    return float(value) if expected is float else value


def _keyword_type(model: str, key: str, p: inspect.Parameter):
    """What a constructor keyword accepts: its default's type, or for a None default the plain
    type in its annotation; keywords that take a network are attached with --helper."""
    if p.default is not inspect.Parameter.empty and p.default is not None:
        return p.default if isinstance(p.default, (tuple, list)) else type(p.default)
    if p.annotation is inspect.Parameter.empty:
        return None  # nothing says what it takes
    annotation = getattr(p.annotation, "__name__", str(p.annotation))
    for plain in (bool, int, float, str):
        name = plain.__name__
        if annotation in (name, f"{name} | None", f"Optional[{name}]"):
            return plain
    raise UsageError(f"--set {key}: {model}'s {key} ({annotation}) cannot be set from the "
                     "command line")


def parse_sets(model: str, sets: tuple[str, ...]) -> tuple[dict, dict]:
    """(RunConfig field overrides, model keyword arguments) from ``--set`` items, checked."""
    from image_bench.engine.step import LR_SCHEDULES
    from image_bench.experiments.config import RunConfig

    factory = check_model(model)
    field_types = typing.get_type_hints(RunConfig)
    keywords = model_parameters(factory)
    fields, kwargs = {}, {}
    for item in sets:
        if "=" not in item:
            raise UsageError(f"--set {item!r}: expected key=value")
        key, text = item.split("=", 1)
        value = parse_value(text)
        if key in CONFIG_FIELDS:
            value = check_type(key, value, field_types[key])
            if key in POSITIVE_FIELDS and value < 1:
                raise UsageError(f"--set {key}={value}: must be at least 1")
            if key == "lr_schedule" and value not in LR_SCHEDULES:
                raise UsageError(f"--set lr_schedule={value}: unknown; known: "
                                 f"{', '.join(LR_SCHEDULES)}")
            fields[key] = value
        elif key in ("model", "data", "profile"):
            raise UsageError(f"--set {key}: {key} is an argument of its own")
        else:
            name = key.removeprefix("model_kwargs.")
            if name not in keywords:
                known = ", ".join([*CONFIG_FIELDS, *keywords])
                raise UsageError(f"unknown --set key {key!r} for {model}; known: {known}")
            kwargs[name] = check_type(name, value, _keyword_type(model, name, keywords[name]))
    check_constructs(model, factory, kwargs)
    return fields, kwargs


def load_run_config(run_dir: Path, prefix: str = ""):
    """The RunConfig of a run folder (its config.json), or a usage error naming the folder."""
    from image_bench.experiments.config import RunConfig

    conf = Path(run_dir) / "config.json"
    if not conf.exists():
        raise UsageError(f"{prefix}{run_dir} is not a run folder (no config.json)")
    try:
        return RunConfig.from_dict(json.loads(conf.read_text())["config"])
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{prefix}{conf} is not a run's config (unreadable: "
                         f"{type(err).__name__})") from None


def check_helpers(model: str, items: tuple[str, ...]) -> dict[str, Path]:
    """The ``--helper ROLE=RUN_DIR`` items as {role: run folder}, checked against the model's
    ``requires``: every role given once, each a finished run of the right model. A model that
    needs a trained helper never starts without it (TG's loss cannot be computed, TPGSR's text
    prior would come from an untrained CRNN)."""
    requires = getattr(check_model(model), "requires", {})
    given: dict[str, Path] = {}
    for item in items:
        role, sep, path = item.partition("=")
        if not sep or not role or not path:
            raise UsageError(f"--helper {item!r}: expected ROLE=RUN_DIR")
        if role not in requires:
            roles = ", ".join(requires) or "none"
            raise UsageError(f"--helper {role}: {model} has no helper role {role!r} "
                             f"(its roles: {roles})")
        run = Path(path)
        trained = load_run_config(run, f"--helper {item}: ").model
        if trained != requires[role]:
            raise UsageError(f"--helper {item}: that is a {trained} run; {model}'s {role} is a "
                             f"{requires[role]} run")
        if not (run / "best.pt").exists():
            raise UsageError(f"--helper {item}: {path} has no best.pt (its training has not "
                             "finished: run the same `image-bench train` again to resume it)")
        given[role] = run
    missing = [role for role in requires if role not in given]
    if missing:
        needs = "; ".join(f"--helper {role}=RUN_DIR, a trained {requires[role]} run "
                          f"(`image-bench train {requires[role]} --data synth`)"
                          for role in missing)
        raise UsageError(f"{model} needs {needs}")
    return given


def check_constructs(model: str, factory, kwargs: dict) -> None:
    """Let the constructor check the keywords' values (CRNN's seven channel counts, IMAGE's
    fixed iterations) without the time and memory of a real build: on the meta device, where
    parameters have a shape but no storage."""
    import torch

    if not kwargs:
        return

    def build(**kw):
        with torch.device("meta"):
            factory(**kw)

    try:
        build(**kwargs)
    except (TypeError, ValueError) as err:
        try:
            build()
        except (TypeError, ValueError):
            return  # the defaults fail alike: not the keywords' fault
        except Exception:
            pass  # the defaults got past the check and stopped at what meta cannot do
        given = " ".join(f"{k}={json.dumps(v)}" for k, v in kwargs.items())
        raise UsageError(f"--set {given}: {model} rejects it: {err}") from None
    except Exception:
        return  # this model cannot be built on meta (SVTR): the real build will check


def check_train_data(data: str) -> None:
    """Training reads a named set with a train split; a path is for evaluation."""
    from image_bench.data import datasets

    trainable = [n for n, s in datasets.SPLITS.items() if "train" in s]
    if data in trainable:
        return
    if data in datasets.SPLITS:
        raise UsageError(f"--data {data}: has no train split; train on one of "
                         f"{', '.join(trainable)}")
    if Path(data).exists():
        check_data_path(data)
        raise UsageError(f"--data {data}: train reads a named set ({', '.join(trainable)}); "
                         "a path is evaluated with `image-bench eval RUN --data PATH`")
    raise UsageError(f"--data {data!r}: neither a data set name ({', '.join(datasets.SPLITS)}) "
                     "nor an existing path")


def check_data_path(data: str, option: str = "--data"):
    """The subsets (``paths.Subset``) of a ``--data`` path, or a usage error naming it."""
    from image_bench.data.lmdb_format import DataError
    from image_bench.data.paths import inspect_lmdbs

    try:
        return inspect_lmdbs(data)
    except DataError as err:
        raise UsageError(f"{option} {data}: {err.message}" if err.path == str(Path(data))
                         else f"{option} {data}: {err}") from None


def check_eval_data(data: str, option: str = "--data"):
    """A known set name (returns None) or a path holding LMDBs (returns its subsets)."""
    from image_bench.data import datasets
    from image_bench.data.paths import is_name

    if is_name(data):
        return None
    if not Path(data).exists():
        raise UsageError(f"{option} {data!r}: neither a data set name "
                         f"({', '.join(datasets.SPLITS)}) nor an existing path")
    return check_data_path(data, option)


def check_run_dir(run_dir: Path, cfg) -> None:
    """A --run-dir that holds another run is refused before training touches it."""
    from image_bench.engine.train import _check_run_dir

    try:
        _check_run_dir(Path(run_dir), cfg)
    except ValueError as err:
        raise UsageError(f"--run-dir {err}") from None
