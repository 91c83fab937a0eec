"""Image decoders of the feature pass (config ``decoder``), behind one signature: a list of files ->
uint8 CHW RGB tensors on the device, plus the files that needed the PIL fallback.

pil: ``transforms.decode`` (every format and mode), in threads.
torchvision: the JPEGs of a batch decoded in one ``decode_jpeg`` call (nvjpeg on CUDA, libjpeg on
    CPU: the same code on both). Files whose bytes are not JPEG (PNG, BMP, ..., whatever their
    suffix) go to PIL directly, so a batch without a JPEG is PIL's alone. One odd JPEG (CMYK,
    progressive, broken) fails the whole batched call, so the batch is retried file by file and
    what still fails goes to PIL. A file PIL cannot read either raises the usual error naming it.
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import Executor
from pathlib import Path

import torch

from benchmark.features.views import decode

log = logging.getLogger(__name__)

_JPEG_MAGIC = b"\xff\xd8\xff"
# what torchvision 0.29 warns on every call of its decoders: deprecated in favour of torchcodec,
# which this project does not depend on (not installable everywhere yet), with no replacement in
# torchvision itself; they still work, and decoder=pil is the way once they are removed
_DEPRECATED = "The image decoding and encoding capabilities of TorchVision are deprecated"


def resolve(decoder: str, device: torch.device) -> str:
    """``auto`` -> torchvision (nvjpeg) on CUDA, pil on CPU."""
    if decoder != "auto":
        return decoder
    return "torchvision" if device.type == "cuda" else "pil"


def decode_pil(paths: list[str], device: torch.device, pool: Executor) -> tuple[list[torch.Tensor], list[str]]:
    return [img.to(device) for img in pool.map(decode, paths)], []


def _jpeg_bytes(path: str) -> torch.Tensor | None:
    """The file's bytes as a uint8 tensor if they are a JPEG, else None (PIL's: PNG, BMP, ... or an
    unreadable file, which PIL then reports by name). Content decides, not the suffix: a PNG named
    ``.jpg`` is common. Read in Python, not with torchvision's deprecated ``read_file``, whose
    warning would need silencing in all the pool's threads at once (``catch_warnings`` is not
    thread-safe)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data.startswith(_JPEG_MAGIC) else None


def _decode_jpegs(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """RGB images of JPEG bytes in one batched ``decode_jpeg`` (nvjpeg on CUDA), None where a file
    cannot be decoded. One odd file fails the whole batched call, so it is then retried file by
    file. No JPEG, no call: ``decode_jpeg`` refuses an empty list, and a batch of PNGs is valid."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not data:
        return []
    with warnings.catch_warnings():  # this call only: the user's own torchvision calls still warn
        warnings.filterwarnings("ignore", _DEPRECATED, DeprecationWarning)
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            out: list[torch.Tensor | None] = []
            for d in data:
                try:
                    out.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    out.append(None)
            return out


def decode_torchvision(paths: list[str], device: torch.device,
                       pool: Executor) -> tuple[list[torch.Tensor], list[str]]:
    """The JPEGs of the batch by ``_decode_jpegs``, every other file (and a JPEG it cannot decode) by
    PIL, in the order of ``paths``; the second item lists the files PIL decoded."""
    data = list(pool.map(_jpeg_bytes, paths))
    jpeg = [i for i, d in enumerate(data) if d is not None]
    out: list[torch.Tensor | None] = [None] * len(paths)
    for i, img in zip(jpeg, _decode_jpegs([data[i] for i in jpeg], device)):
        out[i] = img
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
