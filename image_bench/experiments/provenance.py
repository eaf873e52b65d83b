"""Where a number came from: commit, package versions, device. Attached to every store record."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from image_bench.experiments.store import now_iso

PACKAGES = ("torch", "numpy", "fvcore", "triton", "image-bench")
REPO = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=1)
def git_state() -> dict:
    def git(*args):
        try:
            out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                                 timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    # A dirty tree is worth knowing: the record then reflects uncommitted code.
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit or "unknown", "dirty": bool(status) if status is not None else None}


@functools.lru_cache(maxsize=1)
def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def device_name(device: str | None) -> str:
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()})"


def provenance(*, device: str | None, profile: str, seed: int | None, wall_s: float,
               data: dict | list | None = None, **extra) -> dict:
    git = git_state()
    return {"commit": git["commit"], "dirty": git["dirty"], "packages": package_versions(),
            "device": device_name(device), "profile": profile, "seed": seed,
            "wall_s": round(float(wall_s), 3), "data": data, "created": now_iso(), **extra}
