"""The competition's top recipes (experiments/peers.yaml) and the face-model ensembles, scored as the
server scores them on competition layouts (issue 25): each configuration is submitted with
``submit --train`` and scored against the organizer's truth; each ensemble's gain over the best
single face model is paired over the same test people (95% bootstrap interval over identities).

    python benchmarks/peers.py --comp /tmp/plain /tmp/day/comp --out /tmp/peers

``--comp`` takes any number of make-competition folders (a photo gallery, a rendered one, ...).
Every submission is kept under ``<out>/<layout>/``: a rerun submits only what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from competition_study import first_hits, submit  # noqa: E402

from benchmark.config import dump_yaml, resolve  # noqa: E402
from benchmark.evaluation.measures import query_scores  # noqa: E402
from benchmark.evaluation.metrics import sample_interval  # noqa: E402

#: row -> (experiment, its overrides): the single face models, their ensembles, the peers' recipes
ROWS = {
    "sface": ("peers-2025-sface", {}),
    "dlib": ("peers-2025-dlib", {}),
    "ensemble sface+dlib": ("peers-2026-ensemble", {"members": ["sface", "dlib"], "member_weights": [0.6, 0.4],
                                                     "align": "none"}),
    "ensemble sface+dlib+lite0 on whole images": ("peers-2026-ensemble", {"align": "none"}),
    "ensemble sface+dlib+lite0 on crops (2026 winner's shape)": ("peers-2026-ensemble", {}),
    "sface + flip + aqe + k-reciprocal (2026 runner-up)": ("peers-2026-runner-up", {}),
}
SINGLE = ("sface", "dlib")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comp", type=Path, nargs="+", required=True, help="make-competition folders")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), help="which rows (default: all)")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    table = []
    for comp in args.comp:
        truth = json.loads((comp / "truth.json").read_text())
        folder = args.out / comp.name
        folder.mkdir(parents=True, exist_ok=True)
        per_query, labels = {}, None
        for row in args.rows:
            experiment, overrides = ROWS[row]
            config = folder / f"{row.split(' (')[0].replace(' ', '_').replace('+', '-')}.yaml"
            config.write_text(dump_yaml(resolve(experiment, overrides)))
            path = config.with_suffix(".json")
            took, _ = submit(comp, comp / "train", [], path, config)
            labels, ranks = first_hits(path, truth)
            per_query[row] = query_scores(ranks)
            print(f"{comp.name:12s} {row:52s} {per_query[row].mean():6.1f} ({took:5.1f} s; load "
                  f"{os.getloadavg()[0]:.2f})", flush=True)
        single = [r for r in SINGLE if r in per_query]
        best = max(single, key=lambda r: per_query[r].mean()) if single else None
        for row, s in per_query.items():
            gain = s - per_query[best] if best and row not in SINGLE else None
            table.append({"layout": comp.name, "configuration": row, "score": s.mean(),
                          "people ±": sample_interval(s, labels),
                          "vs best single": f"{gain.mean():+.1f} ± {sample_interval(gain, labels):.1f} ({best})"
                          if gain is not None else ""})
    df = pd.DataFrame(table)
    df.to_csv(args.out / "peers.csv", index=False)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(f"load average at end: {os.getloadavg()[0]:.2f}; table: {args.out / 'peers.csv'}")


if __name__ == "__main__":
    main()
