"""Where frozen SFace lands on a make-competition preset's gallery, per style mix (issue 24: calibrate the
render proxy to the real gap — about 950-980 for the 2025 edition's gallery, 700-800 for 2026's).

For each candidate mix: the preset's layout with that gallery (``make_competition``), frozen SFace
``submit`` on its test folders, ``score-submission`` against its truth. Queries are photographs in
every layout (their features come from the cache after the first); only the gallery is rendered.
Prints the score per mix, the band, and which mix lands in it; nothing is timed here.

    python benchmarks/calibrate.py --preset 2026 --mixes "cartoon,stylization,sketch" "none,cartoon,stylization"
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmark.competition import PRESETS, TRUTH_FILE, make_competition
from benchmark.config import Config, parse_overrides
from benchmark.evaluation.scoring import score_files
from benchmark.submit import submit

BANDS = {"2025": (950.0, 980.0), "2026": (700.0, 800.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=list(PRESETS), required=True)
    parser.add_argument("--mixes", nargs="+", required=True, help="gallery style mixes (make-competition syntax)")
    parser.add_argument("--style-arg", nargs="+", default=[], metavar="STYLE.KEY=VALUE",
                        help="style parameters for every mix (make-competition's --style-arg, STYLE.KEY in a mix)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="keep the layouts here (default: a temporary folder)")
    args = parser.parse_args()
    lo, hi = BANDS[args.preset]
    style_args = parse_overrides(args.style_arg, "--style-arg")
    root = args.out or Path(tempfile.mkdtemp(prefix="calibrate-"))
    cfg = Config(experiment="calibrate", backbone="sface", embedding="backbone", tracking="none",
                 cache_dir=str(root / "cache"))
    print(f"preset {args.preset}: band {lo:g}-{hi:g}; load average {os.getloadavg()[0]:.2f}")
    for mix in args.mixes:
        t0 = time.perf_counter()
        out = root / mix.replace(",", "+").replace(":", "x")
        make_competition(out, seed=args.seed, gallery_style=mix, overwrite=True, style_args=style_args or None,
                         **PRESETS[args.preset]["params"])
        submit(cfg, out / "test" / "query", out / "test" / "gallery", k=10, out=out / "submission.json")
        s = score_files(out / "submission.json", out / TRUTH_FILE)
        verdict = "in the band" if lo <= s["score"] <= hi else "below" if s["score"] < lo else "above"
        print(f"{mix} {' '.join(args.style_arg)}".ljust(40) + f" {s['score']:6.1f}  top1 {s['top1']:.3f}  ({verdict}; {time.perf_counter() - t0:.0f} s)",
              flush=True)


if __name__ == "__main__":
    main()
