"""backbone=dlib's speed on this machine, against the target of 20 images/s including alignment (issue 25),
and its face detector choice: YuNet (SFace's, what ``DlibAligner`` uses) vs dlib's own HOG detector.

Measured in one process on the same LFW photos, with the classes the pipeline runs: decode, YuNet
detection (``DlibAligner.detect``), the 5-point landmarks + 150x150 chip (``warp``) and dlib's batch
descriptor (``DlibFaceNet``, batches of ``--batch``). Prints images/s, the seconds of each stage (the
profile, when the target is missed) and the load average, so a loaded machine's numbers read as such.
Then the detectors: how many images each finds a face in, on the photos and on their cartoon rendering
(benchmark/features/styles.py), and its milliseconds per image.

    SCIKIT_LEARN_DATA=/work/shared/data python benchmarks/dlib_speed.py      # 200 LFW photos
    python benchmarks/dlib_speed.py --images 400 --style sketch
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from benchmark.data.lfw import lfw_root
from benchmark.features import styles
from benchmark.features.views import decode
from benchmark.models import dlib_face

TARGET = 20.0


def _timed(fn, *args):
    """(fn(*args), wall seconds, this process's CPU seconds: what a loaded machine inflates less)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - t0, time.process_time() - c0


def speed(files: list[Path], batch: int) -> None:
    aligner = dlib_face.DlibAligner()
    net = dlib_face.DlibFaceNet(dlib_face.models_dir() / dlib_face.RESNET_FILE)
    net(aligner(decode(str(files[0])))[0][None].float())  # warm-up: lazy model loads
    wall = dict.fromkeys(["decode", "detection", "landmarks+chip", "descriptor"], 0.0)
    cpu = dict(wall)

    def add(stage: str, timed):
        wall[stage] += timed[1]
        cpu[stage] += timed[2]
        return timed[0]

    chips, found = [], 0
    for f in files:
        img = add("decode", _timed(decode, str(f)))
        row = add("detection", _timed(aligner.detect, img))
        chips.append(add("landmarks+chip", _timed(aligner.warp, img, row)))
        found += bool(row[0])
    for i in range(0, len(chips), batch):
        add("descriptor", _timed(net, torch.stack(chips[i:i + batch]).float()))
    rate = len(files) / sum(wall.values())
    print(f"dlib: {rate:.1f} images/s ({rate / TARGET:.2f} x the target of {TARGET:g}), faces found in "
          f"{found}/{len(files)}, load average {os.getloadavg()[0]:.2f}")
    if rate < TARGET:
        print("profile, ms/image wall (CPU):  " + ",  ".join(
            f"{k} {1000 * wall[k] / len(files):.1f} ({1000 * cpu[k] / len(files):.1f})" for k in wall))


def detectors(files: list[Path], style: str) -> None:
    """Images with a face found by YuNet (the pipeline's rule) and by dlib's HOG detector (upsampled
    0 and 1 times: 1 finds faces down to ~40 px at four times the cost), on photos and in ``style``."""
    import dlib

    aligner = dlib_face.DlibAligner()
    hog = dlib.get_frontal_face_detector()
    finders = {"yunet": lambda rgb: bool(aligner.detect(torch.from_numpy(rgb).permute(2, 0, 1))[0]),
               "hog": lambda rgb: len(hog(rgb, 0)) > 0, "hog-upsample1": lambda rgb: len(hog(rgb, 1)) > 0}
    photos = [np.ascontiguousarray(decode(str(f)).permute(1, 2, 0).numpy()) for f in files]
    for name, images in (("photo", photos), (style, [styles.render_array(p, style) for p in photos])):
        cells = []
        for det, find in finders.items():
            hits, s, _ = _timed(lambda: sum(find(rgb) for rgb in images))
            cells.append(f"{det} {hits}/{len(images)} ({1000 * s / len(images):.1f} ms/img)")
        print(f"{name:8s} faces found: " + ", ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32, help="images per descriptor call (the eval batch)")
    parser.add_argument("--style", default="cartoon", choices=list(styles.STYLES))
    args = parser.parse_args()
    reason = dlib_face.unavailable()
    if reason:
        raise SystemExit(f"backbone=dlib {reason}")
    files = sorted(Path(lfw_root(None, "SCIKIT_LEARN_DATA=")).glob("*/*.jpg"))
    files = random.Random(0).sample(files, min(args.images, len(files)))  # many people, not the first few
    print(f"{len(files)} LFW photos, {torch.get_num_threads()} threads, load average before: "
          f"{os.getloadavg()[0]:.2f}")
    speed(files, args.batch)
    detectors(files, args.style)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
