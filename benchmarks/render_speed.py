"""Rendering speed of every style (benchmark/features/styles.py), images/s on one core at LFW's 250 px,
against the target of 50 images/s per style per core (issue 24: make-competition --gallery-style cartoon
rendered ~9 images/s). Measured in one process on the same LFW photos, each style after a warm-up,
best of ``--repeats``; prints the load average so a loaded machine's numbers read as such.

    python benchmarks/render_speed.py                  # 60 LFW photos, 3 repeats
    python benchmarks/render_speed.py --images 200 --styles cartoon stylization
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from benchmark.data.lfw import lfw_root
from benchmark.features import styles

TARGET = 50.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--styles", nargs="+", default=list(styles.STYLES), choices=list(styles.STYLES))
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core: the target is per core (make-competition renders one image at a time)
    files = sorted(Path(lfw_root(None, "SCIKIT_LEARN_DATA=")).glob("*/*.jpg"))[:args.images]
    photos = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    print(f"{len(photos)} LFW photos ({photos[0].shape[1]}x{photos[0].shape[0]} px), one core, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'style':12s} {'v':>2s} {'images/s':>9s} {'x target':>9s}")
    for name in args.styles:
        styles.render_array(photos[0], name)  # warm-up (OpenCV's lazy initialisation)
        best = 0.0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for rgb in photos:
                styles.render_array(rgb, name)
            best = max(best, len(photos) / (time.perf_counter() - t0))
        print(f"{name:12s} {styles.VERSIONS[name]:>2d} {best:9.1f} {best / TARGET:9.2f}"
              + ("" if best >= TARGET else "  below target"))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
