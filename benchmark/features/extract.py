"""Frozen-backbone feature extraction: one streaming pass over the images makes every view a run needs.

Images are decoded in batches (the next batch decodes while the current one runs through the
backbone), each batch becomes every requested view (the eval view, the bank's augmented views)
and is dropped: peak memory does not grow with the dataset (only the features, N x dim floats,
do). Decoder (``decoder``) and arithmetic (``precision``) are config keys, chosen independently of
the device; channels_last always. Both are part of every cache key.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmark.features import decoders, styles
from benchmark.config import Config
from benchmark.models.backbones import FrozenBackbone
from benchmark.features.views import to_input


def precision(cfg: Config, device: torch.device) -> str:
    """fp32 | bf16. ``auto``: bf16 only for the cached engine on CUDA; the reference engine is the
    oracle and stays fp32 on every device unless bf16 is asked for explicitly."""
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16" if device.type == "cuda" and cfg.engine == "cached" else "fp32"


_FILE_HASHES: dict[tuple[str, int, int], bytes] = {}


def content_hash(paths: list[str]) -> str:
    """Hash of the image files' bytes, in order: features are reused only for the same pixels.
    Each file is read once per process (keyed by path, size and modification time)."""
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        key = (p, st.st_size, st.st_mtime_ns)
        if key not in _FILE_HASHES:
            _FILE_HASHES[key] = hashlib.sha1(Path(p).read_bytes()).digest()
        h.update(_FILE_HASHES[key])
    return h.hexdigest()[:32]


def forward(backbone: FrozenBackbone, batch_uint8: torch.Tensor, cfg: Config) -> torch.Tensor:
    """Backbone features of a uint8 NCHW batch (moved to the backbone's device), float32."""
    device = backbone.device
    x = to_input(batch_uint8.to(device, non_blocking=True), cfg, backbone.spec.mean, backbone.spec.std)
    x = x.contiguous(memory_format=torch.channels_last)  # 1.6x faster convolutions on CPU too
    bf16 = precision(cfg, device) == "bf16"
    with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
        return backbone(x).float()


@dataclass(frozen=True)
class View:
    """One output of the pass: features of ``pixels(images, rows)`` for the dataset images ``index``
    (output row r = image index[r]); ``pixels`` gets a batch's decoded images and their output rows
    and returns uint8 NCHW. ``styles``: the style each output row is rendered in first (a name of
    ``features.styles`` per row; None = photos), before alignment and the view."""

    index: np.ndarray
    pixels: Callable[[list[torch.Tensor], np.ndarray], torch.Tensor]
    styles: np.ndarray | None = None


def extract_views(backbone: FrozenBackbone, paths: list[str], views: list[View], cfg: Config,
                  desc: str, dtype: torch.dtype = torch.float32,
                  prepare: Callable[[torch.Tensor, int, str], torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Features [len(view.index), ...] of every view (CPU), each image decoded once and rendered
    once per style its views ask for (``View.styles``, ``cfg.style_args``), stored as ``dtype``
    (boundary activations: reduced precision, converted batch by batch). ``prepare(image, i,
    style)``: what every decoded (and rendered) image ``paths[i]`` goes through before its views
    (face alignment, on the rendered pixels)."""
    device = backbone.device
    decoder = decoders.resolve(cfg.decoder, device)
    row_of = np.full((len(views), len(paths)), -1)
    for v, view in enumerate(views):
        row_of[v, view.index] = np.arange(len(view.index))
    needed = np.flatnonzero((row_of >= 0).any(0))
    out: list[torch.Tensor | None] = [None] * len(views)
    fallbacks: list[str] = []
    bar = tqdm(total=len(needed), desc=desc, leave=False, mininterval=1, unit="img")
    for positions, images, fell_back in _decoded(paths, needed, cfg.eval_batch_size, decoder, device,
                                                 cfg.num_workers):
        fallbacks += fell_back
        rendered: dict[tuple[int, str], torch.Tensor] = {}

        def pixels_of(t: int, style: str) -> torch.Tensor:
            """Image t of the batch in ``style`` (rendered and prepared once per pass)."""
            if (t, style) not in rendered:
                img = styles.render(images[t], style, cfg.style_args.get(style))
                rendered[t, style] = img if prepare is None else prepare(img, int(positions[t]), style)
            return rendered[t, style]

        for v, view in enumerate(views):
            rows = row_of[v, positions]
            take = np.flatnonzero(rows >= 0)
            if not len(take):
                continue
            names = [styles.NONE] * len(take) if view.styles is None else view.styles[rows[take]]
            batch = [pixels_of(int(t), str(name)) for t, name in zip(take, names)]
            feats = forward(backbone, view.pixels(batch, rows[take]), cfg).cpu()
            if out[v] is None:
                out[v] = torch.empty(len(view.index), *feats.shape[1:], dtype=dtype)
            out[v][torch.as_tensor(rows[take])] = feats.to(dtype)
        bar.update(len(positions))
    bar.close()
    decoders.report_fallbacks(decoder, fallbacks, len(needed))
    return [t if t is not None else torch.empty(0, 0) for t in out]


def decoded_batches(paths: list[str], cfg: Config, device: torch.device,
                    style: str = styles.NONE) -> Iterator[list[torch.Tensor]]:
    """Every image of ``paths`` decoded (and rendered in ``style``), in order, a batch at a time (what
    needs pixels, not features: face detection sees the rendered image)."""
    decoder = decoders.resolve(cfg.decoder, device)
    for _, images, _ in _decoded(paths, np.arange(len(paths)), cfg.eval_batch_size, decoder, device,
                                 cfg.num_workers):
        yield [styles.render(img, style, cfg.style_args.get(style)) for img in images]


def _decoded(paths: list[str], positions: np.ndarray, batch_size: int, decoder: str, device: torch.device,
             workers: int) -> Iterator[tuple[np.ndarray, list[torch.Tensor], list[str]]]:
    """(positions, images, files that fell back) per batch; the next batch is decoded meanwhile, so
    at most two batches of images are alive."""
    decode = decoders.DECODERS[decoder]
    batches = [positions[a:a + batch_size] for a in range(0, len(positions), batch_size)]
    with ThreadPoolExecutor(max(1, workers)) as files, ThreadPoolExecutor(1) as ahead:
        def submit(k: int):
            return ahead.submit(decode, [paths[i] for i in batches[k]], device, files) if k < len(batches) else None

        pending = submit(0)
        for k, batch in enumerate(batches):
            images, fell_back = pending.result()
            pending = submit(k + 1)
            yield batch, images, fell_back


def output_shape(backbone: FrozenBackbone, cfg: Config) -> tuple[int, ...]:
    """Shape of one image's output of ``backbone`` (e.g. the boundary activation), from a blank image."""
    device = backbone.device
    blank = torch.zeros(1, 3, cfg.image_size, cfg.image_size, dtype=torch.uint8, device=device)
    return tuple(forward(backbone, blank, cfg).shape[1:])
