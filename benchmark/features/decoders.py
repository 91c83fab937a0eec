"""Image decoders of the feature pass (config ``decoder``), behind one signature: a list of files ->
uint8 CHW RGB tensors on the device, plus the files that needed the PIL fallback.

pil: ``transforms.decode`` (every format and mode), in threads.
torchvision: the JPEGs of a batch decoded in one ``decode_jpeg`` call (nvjpeg on CUDA, libjpeg on
    CPU: the same code on both). One odd file (CMYK, a PNG named ``.jpg``, a progressive or broken
    JPEG) fails the whole batched call, so the batch is retried file by file and what still fails
    goes to PIL; files whose bytes are not JPEG go to PIL directly. A file PIL cannot read either
    raises the usual error naming it.
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import Executor

import torch

from benchmark.features.views import decode

log = logging.getLogger(__name__)
# torchvision 0.29 deprecates its decoders in favour of torchcodec (not installable everywhere yet);
# they still work, and the PIL fallback covers their removal
warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision",
                        DeprecationWarning)

_JPEG_MAGIC = b"\xff\xd8\xff"


def resolve(decoder: str, device: torch.device) -> str:
    """``auto`` -> torchvision (nvjpeg) on CUDA, pil on CPU."""
    if decoder != "auto":
        return decoder
    return "torchvision" if device.type == "cuda" else "pil"


def decode_pil(paths: list[str], device: torch.device, pool: Executor) -> tuple[list[torch.Tensor], list[str]]:
    return [img.to(device) for img in pool.map(decode, paths)], []


def decode_torchvision(paths: list[str], device: torch.device,
                       pool: Executor) -> tuple[list[torch.Tensor], list[str]]:
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    data = list(pool.map(read_file, paths))
    out: list[torch.Tensor | None] = [None] * len(paths)
    jpeg = [i for i, d in enumerate(data) if bytes(d[:3].tolist()) == _JPEG_MAGIC]
    try:
        for i, img in zip(jpeg, decode_jpeg([data[i] for i in jpeg], mode=ImageReadMode.RGB, device=device)):
            out[i] = img
    except RuntimeError:  # one bad file fails the batch: retry one by one
        for i in jpeg:
            try:
                out[i] = decode_jpeg(data[i], mode=ImageReadMode.RGB, device=device)
            except RuntimeError:
                pass
    fallback = [i for i, img in enumerate(out) if img is None]
    for i, img in zip(fallback, pool.map(decode, [paths[i] for i in fallback])):
        out[i] = img.to(device)
    return out, [paths[i] for i in fallback]


DECODERS = {"pil": decode_pil, "torchvision": decode_torchvision}


def report_fallbacks(decoder: str, files: list[str], total: int) -> None:
    """One log line per pass: how many files the fast decoder handed to PIL, and which."""
    if files:
        shown = ", ".join(files[:5]) + (", ..." if len(files) > 5 else "")
        log.warning("decoder %s: %d of %d files fell back to PIL (%s)", decoder, len(files), total, shown)
