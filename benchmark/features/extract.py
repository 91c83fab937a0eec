"""Frozen-backbone feature extraction: one streaming pass over the images makes every view a run needs.

Images are decoded in batches (the next batch decodes while the current one runs through the
network), each batch becomes every requested view (the eval view, the bank's augmented views)
and is dropped: peak memory does not grow with the dataset (only the features, N x dim floats,
do). What decides the pixels and the arithmetic (decoder, precision, runtime, ...) is the
``Preprocessing`` value, all of which is in every cache key; channels_last always for torch.
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
from torch import nn
from tqdm.auto import tqdm

from benchmark.features import decoders, styles
from benchmark.features.spec import Preprocessing
from benchmark.features.views import to_input

_FILE_HASHES: dict[tuple[str, int, int], bytes] = {}


def file_digest(path: str) -> bytes:
    """SHA-1 of one image file's bytes, read once per process (keyed by path, size and modification time)."""
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = hashlib.sha1(Path(path).read_bytes()).digest()
    return _FILE_HASHES[key]


def content_hash(paths: list[str]) -> str:
    """Hash of the image files' bytes, in order: features are reused only for the same pixels."""
    h = hashlib.sha256()
    for p in paths:
        h.update(file_digest(p))
    return h.hexdigest()[:32]


def forward(net: nn.Module, batch_uint8: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """Features of a uint8 NCHW batch through ``net`` (a frozen torch module or its ONNX Runtime
    session, ``benchmark.features.runtime``), float32 on the network's device."""
    x = to_input(batch_uint8.to(net.device, non_blocking=True), prep)
    if prep.runtime != "torch":  # an ONNX Runtime session, OpenCV's DNN, dlib: fp32 as they are
        return net(x)
    x = x.contiguous(memory_format=torch.channels_last)  # 1.6x faster convolutions on CPU too
    bf16 = prep.precision == "bf16"
    with torch.autocast(net.device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
        return net(x).float()


@dataclass(frozen=True)
class Output:
    """One output of the pass: features of ``pixels(images, rows)`` for the dataset images ``index``
    (output row r = image index[r]); ``pixels`` gets a batch's decoded images and their output rows
    and returns uint8 NCHW; ``name`` says what it is in the progress bar."""

    index: np.ndarray
    pixels: Callable[[list[torch.Tensor], np.ndarray], torch.Tensor]
    name: str = "eval view"
    #: the style each output row is rendered in first, before alignment and the view (a
    #: ``styles.tag`` per row; None = photos)
    styles: np.ndarray | None = None


def describe(outputs: list[Output]) -> str:
    """What a pass computes, in a stable order: ``eval view + mirrored eval view + 3 report views`` (the
    eval views by name, the numbered bank views counted)."""
    names = [o.name for o in outputs]
    banks = [n.rsplit(" ", 1)[0] for n in names if n.rsplit(" ", 1)[-1].isdigit()]
    parts = sorted((n for n in names if not n.rsplit(" ", 1)[-1].isdigit()), key=lambda n: (n != "eval view", n))
    parts += [f"{banks.count(k)} {k}s" for k in sorted(set(banks))]
    return " + ".join(parts) or "nothing"


def extract_views(net: nn.Module, paths: list[str], outputs: list[Output], prep: Preprocessing,
                  batch_size: int, workers: int, desc: str,
                  prepare: Callable[[torch.Tensor, int, str | None], torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Features [len(output.index), ...] of every output (CPU), each image decoded once and rendered
    once per style its outputs ask for (``Output.styles``), stored as ``prep.dtype`` (boundary
    activations: reduced precision, converted batch by batch). ``prepare(image, i, style)``: what
    every decoded (and rendered) image ``paths[i]`` goes through before its views (face alignment,
    on the rendered pixels)."""
    decoder = prep.decoder
    dtype = getattr(torch, prep.dtype)
    row_of = np.full((len(outputs), len(paths)), -1)
    for v, output in enumerate(outputs):
        row_of[v, output.index] = np.arange(len(output.index))
    needed = np.flatnonzero((row_of >= 0).any(0))
    out: list[torch.Tensor | None] = [None] * len(outputs)
    fallbacks: list[str] = []
    bar = tqdm(total=len(needed), desc=f"{desc}: {describe(outputs)}", leave=False, mininterval=1, unit="img")
    for positions, images, fell_back in _decoded(paths, needed, batch_size, decoder, net.device, workers):
        fallbacks += fell_back
        rendered: dict[tuple[int, str | None], torch.Tensor] = {}

        def pixels_of(t: int, style: str | None) -> torch.Tensor:
            """Image t of the batch in ``style`` (rendered and prepared once per pass)."""
            if (t, style) not in rendered:
                img = styles.render_tag(images[t], style)
                rendered[t, style] = img if prepare is None else prepare(img, int(positions[t]), style)
            return rendered[t, style]

        for v, output in enumerate(outputs):
            rows = row_of[v, positions]
            take = np.flatnonzero(rows >= 0)
            if not len(take):
                continue
            tags = [None] * len(take) if output.styles is None else output.styles[rows[take]]
            batch = [pixels_of(int(t), style) for t, style in zip(take, tags)]
            feats = forward(net, output.pixels(batch, rows[take]), prep).cpu()
            if out[v] is None:
                out[v] = torch.empty(len(output.index), *feats.shape[1:], dtype=dtype)
            out[v][torch.as_tensor(rows[take])] = feats.to(dtype)
        bar.update(len(positions))
    bar.close()
    decoders.report_fallbacks(decoder, fallbacks, len(needed))
    return [t if t is not None else torch.empty(0, 0) for t in out]


def decoded_batches(paths: list[str], decoder: str, batch_size: int, workers: int,
                    device: torch.device, style: str | None = None) -> Iterator[list[torch.Tensor]]:
    """Every image of ``paths`` decoded (and rendered in ``style``), in order, a batch at a time (what
    needs pixels, not features: face detection sees the rendered image)."""
    for _, images, _ in _decoded(paths, np.arange(len(paths)), batch_size, decoder, device, workers):
        yield [styles.render_tag(img, style) for img in images]


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


def output_shape(net: nn.Module, prep: Preprocessing) -> tuple[int, ...]:
    """Shape of one image's output of ``net`` (e.g. the boundary activation), from a blank image."""
    blank = torch.zeros(1, 3, prep.image_size, prep.image_size, dtype=torch.uint8)
    return tuple(forward(net, blank, prep).shape[1:])
