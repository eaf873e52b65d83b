"""Issue 26's real-data table: how the table runs read real photographs (the 4,467 scored ICDAR
2015 training crops) beside the stand-in IC15-352, from the eval records that
scripts/gpu_real_ic15.sh wrote on the device (copied to results/real/ as KEY-eval-SET.json).

    python scripts/real_ic15_table.py [results/real]   # writes results/real/ic15.md
"""

import json
import sys
from pathlib import Path

folder = Path(sys.argv[1] if len(sys.argv) > 1 else "results/real")
lines = ["| run | real IC15 train (%) | stand-in IC15-352 (%) | real / stand-in |",
         "|---|---:|---:|---:|"]
for row in (folder / "runs.tsv").read_text().splitlines():
    label, run_dir = row.split("\t")
    key = Path(run_dir).name
    acc = {}
    for name in ("ic15-train", "ic15-352"):
        path = folder / f"{key}-eval-{name}.json"
        if path.exists():
            record = json.loads(path.read_text())
            acc[name] = 100 * record["average"]["accuracy_weighted"]
    if len(acc) == 2:
        lines.append(f"| {label} (`{key}`) | {acc['ic15-train']:.1f} | {acc['ic15-352']:.1f} | "
                     f"{acc['ic15-train'] / max(acc['ic15-352'], 1e-9):.1f}x |")
note = ("Word accuracy (TextZoom protocol: lower-cased, [0-9a-z]); real: the 4,468 ICDAR 2015 "
        "training crops of ../shared/data/real (4,467 scored: one label normalises to nothing); "
        "runs: Table 1's quick-profile runs; device: NVIDIA H200.")
(folder / "ic15.md").write_text("\n".join(lines) + "\n\n" + note + "\n")
print("\n".join(lines))
