"""The environment a run or a benchmark ran in: versions, device, git commit."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import torch

_PACKAGES = ("numpy", "lmdb", "fvcore", "scikit-image", "triton", "image-bench")
REPO = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=1)
def git_state() -> dict:
    """The commit of the code that runs, and whether the tree had uncommitted changes.

    ``IMAGE_BENCH_COMMIT``, when set, wins: scripts/gpu_reproduce.sh sets it from the caller's
    checkout, because the copy on the GPU machine is no checkout of its own (it arrived without
    ``.git``, or, as in the quick run of 2026-11-24, beside a stale ``.git`` of an older commit
    that made every record say 'a1611fd, dirty')."""
    given = os.environ.get("IMAGE_BENCH_COMMIT")
    if given:
        return {"commit": given, "dirty": None}

    def git(*args):
        try:
            out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                                 timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": "unknown", "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def device_name(device: torch.device | str | None = None) -> str:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()})"


def environment(device: torch.device | str = "cpu") -> dict:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    device = torch.device(device)
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "packages": versions,
        "device": device_name(device),
        "device_type": device.type,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "platform": platform.platform(),
        **git_state(),
    }
    return info
