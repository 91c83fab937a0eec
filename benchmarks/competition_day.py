"""The competition day, end to end, inside the day's budget (issue 24): the rehearsal a team would run,
each step as a user types it, timed in one process, with the load average.

    make-competition --preset 2026 (training photos + renders, a multi-style gallery)
    -> sweep day (the search, validated photo -> render on held-out training people) --budget
    -> choose -> submit --train comp/train --groupname -> check-submission -> score-submission

The competition gave 2 hours of wall time; the script prints each step's time, the total against
it, and the final score (the organizer's truth is read only by the last step).

    python benchmarks/competition_day.py --out /tmp/day --budget 45
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DAY_S = 2 * 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=45.0, help="minutes of the search (sweep --budget)")
    parser.add_argument("--gallery-style", default="cartoon,stylization,sketch")
    parser.add_argument("--train-styles", default="cartoon,stylization")
    args = parser.parse_args()
    out, comp = args.out, args.out / "comp"
    steps = [
        ("make-competition", ["make-competition", "--out", str(comp), "--preset", "2026", "--overwrite",
                              "--train-styles", args.train_styles, "--train-render-fraction", "0.5",
                              "--gallery-style", args.gallery_style]),
        ("search", ["sweep", "day", "--set", f"data_home={comp / 'train'}", "--out", str(out / "results"),
                    "--budget", str(args.budget)]),
        ("choose", ["choose", str(out / "results"), "--out", str(out / "best.yaml")]),
        ("submit", ["submit", "--config", str(out / "best.yaml"), "--train", str(comp / "train"),
                    "--query", str(comp / "test" / "query"), "--gallery", str(comp / "test" / "gallery"),
                    "--groupname", "rehearsal", "--out", str(out / "submission.json")]),
        ("check-submission", ["check-submission", str(out / "submission.json"), "--query", str(comp / "test" / "query"),
                              "--gallery", str(comp / "test" / "gallery")]),
        ("score-submission", ["score-submission", str(out / "submission.json"), "--truth", str(comp / "truth.json")]),
    ]
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    times, last = {}, ""
    for name, argv in steps:
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "benchmark", *argv], stdout=subprocess.PIPE, text=True)
        times[name] = time.perf_counter() - t0
        last = done.stdout
        print(f"{name:18s} {times[name] / 60:7.2f} min  (exit {done.returncode}; load {os.getloadavg()[0]:.2f})",
              flush=True)
        if done.returncode != 0:
            print(done.stdout)
            sys.exit(f"{name} failed")
    total = sum(times.values())
    score = json.loads(last)
    print(f"total {total / 60:.1f} min of the day's {DAY_S / 60:.0f} ({total / DAY_S:.0%}); score {score['score']:.1f} "
          f"(top1 {score['top1']:.3f}, read as {score['form']}); load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
