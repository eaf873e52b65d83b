"""Where a number came from: commit, package versions, device. Attached to every store record."""

from __future__ import annotations

import functools
import platform
from importlib import metadata

from image_bench.engine.env import device_name, git_state
from image_bench.experiments.store import now_iso

PACKAGES = ("torch", "numpy", "fvcore", "triton", "image-bench")

__all__ = ["device_name", "git_state", "package_versions", "provenance"]


@functools.lru_cache(maxsize=1)
def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def provenance(*, device: str | None, profile: str, seed: int | None, wall_s: float,
               data: dict | list | None = None, **extra) -> dict:
    git = git_state()
    return {"commit": git["commit"], "dirty": git["dirty"], "packages": package_versions(),
            "device": device_name(device), "profile": profile, "seed": seed,
            "wall_s": round(float(wall_s), 3), "data": data, "created": now_iso(), **extra}
