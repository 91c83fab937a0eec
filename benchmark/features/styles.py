"""Deterministic renderers: the other domain of a cross-domain split (issue 17).

The competition's gallery held synthetic renders of the people whose real photographs were the
queries. Without those renders, a style is a proxy: an OpenCV non-photorealistic filter applied to
an image's pixels before anything else (face detection, crops, the backbone), as a renderer would
produce them. Every style is a pure function of the pixels and its parameters (the same bytes
twice): the cache keys of rendered views hold the style's name and parameters (``identity``).

Parameters are config: ``style_args: {cartoon: {colors: 6}, lowres: {size: 16}}`` replaces the
defaults of ``STYLES``; ``benchmark list styles`` shows them.
"""

from __future__ import annotations

import inspect
import json
import math
from typing import TYPE_CHECKING, Callable

import numpy as np

from benchmark.params import ConfigError, Param, check_args

if TYPE_CHECKING:  # torch is imported where a tensor is rendered: the config checks styles torch-free
    import torch

#: the value of a style key that renders nothing (same-domain)
NONE = "none"


def _cv2():
    import cv2  # the faces extra; a style without it says how to install it

    return cv2


def _half(rgb: np.ndarray, filter_: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``filter_`` run at half resolution and scaled back: the edge-preserving filters cost ~4x less
    (measured: stylization 13 -> 118 images/s, five bilateral rounds 32 -> 130 on one core at 250 px),
    and a render's flat regions lose nothing."""
    cv2 = _cv2()
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    return cv2.resize(filter_(small), (w, h), interpolation=cv2.INTER_LINEAR)


def painterly(rgb: np.ndarray, sigma_s: float = 60.0, sigma_r: float = 0.45) -> np.ndarray:
    """Painterly rendering: OpenCV's edge-preserving ``stylization`` (flat watercolour regions), at
    half resolution (``sigma_s`` halved with it: the same spatial extent on the face)."""
    cv2 = _cv2()

    def stylize(x):
        bgr = cv2.cvtColor(x, cv2.COLOR_RGB2BGR)
        return cv2.cvtColor(cv2.stylization(bgr, sigma_s=max(sigma_s / 2, 1.0), sigma_r=sigma_r), cv2.COLOR_BGR2RGB)

    return _half(rgb, stylize)


#: about this many pixels (a regular grid) fit k-means; every pixel then takes its nearest centre
QUANTIZE_SAMPLE = 4096


def quantize(rgb: np.ndarray, colors: int, seed: int = 0) -> np.ndarray:
    """``rgb`` with every pixel replaced by its nearest k-means centre (at most ``colors`` colours).
    OpenCV's k-means (k-means++ init, fixed RNG seed) fitted on a regular grid of about
    ``QUANTIZE_SAMPLE`` pixels: the same result every time, ~20x faster than fitting every pixel."""
    cv2 = _cv2()
    flat = rgb.reshape(-1, 3)
    sample = flat[::max(1, len(flat) // QUANTIZE_SAMPLE)]  # a regular grid of pixels: deterministic, no sort
    packed = (sample[:, 0].astype(np.int32) << 16) | (sample[:, 1].astype(np.int32) << 8) | sample[:, 2]
    k = min(colors, len(np.unique(packed)))
    pixels, sample = flat.astype(np.float32), sample.astype(np.float32)
    cv2.setRNGSeed(seed)
    _, _, centres = cv2.kmeans(sample, k, None, (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5),
                               1, cv2.KMEANS_PP_CENTERS)
    nearest = (centres * centres).sum(1) - 2 * pixels @ centres.T  # |p - c|^2 without the |p|^2 every c shares
    return np.clip(np.round(centres), 0, 255).astype(np.uint8)[nearest.argmin(1)].reshape(rgb.shape)


def cartoon(rgb: np.ndarray, colors: int = 8, smooth: int = 5, edges: bool = True,
            edge_block: int = 9, edge_c: float = 2.0) -> np.ndarray:
    """Cartoon rendering: ``smooth`` rounds of bilateral filtering (at half resolution), k-means
    colour quantization to ``colors`` colours, then dark adaptive-threshold edges (``edges``, from
    the full-resolution image) drawn over it."""
    cv2 = _cv2()

    def smoothed(x):
        for _ in range(smooth):
            x = cv2.bilateralFilter(x, 9, 75, 75)
        return x

    flat = _half(rgb, smoothed) if smooth else rgb.copy()
    out = quantize(flat, colors)
    if edges:
        grey = cv2.medianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 7)
        line = cv2.adaptiveThreshold(grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, edge_block, edge_c)
        out[line == 0] = 0
    return out


def sketch(rgb: np.ndarray, sigma_s: float = 60.0, sigma_r: float = 0.07, shade: float = 0.05) -> np.ndarray:
    """Pencil sketch: OpenCV's ``pencilSketch`` greyscale drawing, as three equal channels."""
    cv2 = _cv2()
    grey, _ = cv2.pencilSketch(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), sigma_s=sigma_s, sigma_r=sigma_r,
                               shade_factor=shade)
    return np.repeat(grey[..., None], 3, axis=2)


def lowres(rgb: np.ndarray, size: int = 24) -> np.ndarray:
    """Low resolution: the shorter side shrunk to ``size`` pixels (area averaging) and the image
    scaled back to its own size (bilinear), so it carries no detail finer than ``size`` pixels."""
    cv2 = _cv2()
    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    if scale >= 1:
        return rgb.copy()
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def grey(rgb: np.ndarray) -> np.ndarray:
    """Photometric control: luminance (ITU-R 601) in all three channels."""
    cv2 = _cv2()
    return np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


def dark(rgb: np.ndarray, gain: float = 0.5, gamma: float = 1.5) -> np.ndarray:
    """Photometric control: darkened (``gain`` x pixel^``gamma``, on [0, 1])."""
    x = rgb.astype(np.float64) / 255
    return np.clip(np.round(255 * gain * x ** gamma), 0, 255).astype(np.uint8)


def cast(rgb: np.ndarray, gains: tuple[float, float, float] = (1.15, 1.0, 0.75)) -> np.ndarray:
    """Photometric control: a colour cast (per-channel RGB gains; default warm)."""
    x = rgb.astype(np.float64) * np.asarray(gains, dtype=np.float64)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


#: every style by name: function of a uint8 HWC RGB array (plus its keyword parameters)
STYLES: dict[str, Callable[..., np.ndarray]] = {
    "stylization": painterly, "cartoon": cartoon, "sketch": sketch, "lowres": lowres,
    "grey": grey, "dark": dark, "cast": cast,
}
#: a style's name in cache keys; change it when the style's definition changes (2: stylization and
#: cartoon's smoothing at half resolution, cartoon's k-means fitted on a pixel sample; 5x+ faster)
VERSIONS = {**dict.fromkeys(STYLES, 1), "stylization": 2, "cartoon": 2}


#: the range of each numeric parameter (inclusive; by parameter name, shared by the styles that take
#: it): outside it OpenCV refuses (colors 0) or the render is no image at all (lowres size -3: one pixel)
BOUNDS = {"colors": (1, 256), "smooth": (0, 20), "edge_block": (3, 99), "size": (1, 4096), "sigma_s": (1, 200),
          "sigma_r": (0.01, 1.0), "shade": (0.0, 0.1), "gain": (0.01, 10.0), "gamma": (0.1, 10.0),
          "gains": (0.0, 10.0)}
#: integer parameters OpenCV needs odd (the adaptive threshold's block size)
ODD = ("edge_block",)


def params(name: str) -> dict[str, Param]:
    """The style's declared parameters: names, types and defaults from its function's signature (the
    one definition), ranges from ``BOUNDS``."""
    out = {}
    for p in list(inspect.signature(STYLES[name]).parameters.values())[1:]:
        default = list(p.default) if isinstance(p.default, tuple) else p.default
        kind = type(default)
        lo, hi = BOUNDS.get(p.name, (-math.inf, math.inf))
        out[p.name] = Param(kind, default, lo, hi, length=len(default) if kind is list else None,
                            odd=p.name in ODD)
    return out


def defaults(name: str) -> dict:
    """The style's parameters and their defaults."""
    return {k: p.default for k, p in params(name).items()}


def check(name: str, args: dict | None = None, key: str | None = None) -> dict:
    """The style's full parameters (defaults filled in), or one ConfigError naming the valid styles,
    parameters or a parameter's domain (``key``: the config key they were given under)."""
    if name == NONE:
        return {}
    if name not in STYLES:
        raise ConfigError(f"unknown style {name!r}; valid styles: {NONE}, {', '.join(STYLES)} (benchmark list styles)")
    return check_args(key or f"style_args.{name}", f"style {name}", params(name), args or {})


def mix(spec: str, key: str) -> dict[str, float]:
    """A style mix ``cartoon,stylization:2,sketch`` as ``{style: probability}`` (weights default 1,
    normalized); ``none`` in a mix keeps that share photographs. One ConfigError naming ``key`` for an
    unknown style, a weight that is not a number > 0, or a style named twice."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in str(spec).split(",")):
        name, sep, weight = part.partition(":")
        name = name.strip()
        if not name:  # '' or a stray comma: not silently photographs
            raise ConfigError(f"{key} {spec!r} has an empty style name; list styles separated by commas, or "
                              f"{NONE} for photographs")
        if name != NONE and name not in STYLES:
            raise ConfigError(f"{key} {spec!r}: unknown style {name!r}; valid styles: {NONE}, {', '.join(STYLES)} "
                              "(benchmark list styles)")
        if name in out:
            raise ConfigError(f"{key} {spec!r} names {name} twice; name each style once, its weight after a colon "
                              f"(e.g. {name}:3)")
        if sep and not weight.strip():  # 'cartoon:' meant a weight and gave none
            raise ConfigError(f"{key} {spec!r}: {name}: has no weight after the colon; give one (e.g. {name}:2) "
                              "or drop the colon")
        try:
            w = float(weight) if weight.strip() else 1.0
        except ValueError:
            w = math.nan
        if not (math.isfinite(w) and w > 0):
            raise ConfigError(f"{key} {spec!r}: the weight of {name} must be a number > 0 (e.g. {name}:2)")
        out[name] = w
    total = sum(out.values())
    return {name: w / total for name, w in out.items()}


def identity(name: str, args: dict | None = None) -> dict | None:
    """What decides a style's pixels (name, version, every parameter with defaults filled in): part
    of every cache key of rendered views; None for ``none``."""
    if name == NONE:
        return None
    values = check(name, args)
    return {"style": name, "v": VERSIONS[name], **values}


def tag(name: str, args: dict | None = None) -> str | None:
    """A style's identity as one canonical string (the ``Preprocessing.style`` of its renders); None
    for ``none``."""
    ident = identity(name, args)
    return None if ident is None else json.dumps(ident, sort_keys=True)


def drawn(tags: tuple[str | None, ...]) -> str:
    """The ``Preprocessing.style`` of a bank whose images are each rendered in a style drawn from
    ``tags`` (``draw``)."""
    return json.dumps({"drawn": list(tags), "draw": "splitmix-v1"}, sort_keys=True)


def name_of(style_tag: str | None) -> str:
    return NONE if style_tag is None else parse(style_tag)[0]


def parse(style_tag: str) -> tuple[str, dict]:
    """(name, parameters) of the style a ``tag`` names."""
    ident = json.loads(style_tag)
    return ident["style"], {k: v for k, v in ident.items() if k not in ("style", "v")}


def render_tag(img: torch.Tensor, style_tag: str | None) -> torch.Tensor:
    """``img`` rendered in the style ``style_tag`` names (``tag``), parameters included."""
    return img if style_tag is None else render(img, *parse(style_tag))


def render_array(rgb: np.ndarray, name: str, args: dict | None = None) -> np.ndarray:
    """``rgb`` (uint8 HWC) rendered in style ``name`` with ``args`` over its defaults."""
    if name == NONE:
        return rgb
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in check(name, args).items()}
    out = STYLES[name](np.ascontiguousarray(rgb), **values)
    assert out.shape == rgb.shape and out.dtype == np.uint8, (name, out.shape, out.dtype)
    return out


def render(img: torch.Tensor, name: str, args: dict | None = None) -> torch.Tensor:
    """A uint8 CHW RGB tensor rendered in style ``name`` (on the tensor's device)."""
    import torch

    if name == NONE:
        return img
    rgb = img.permute(1, 2, 0).cpu().numpy()
    return torch.from_numpy(render_array(rgb, name, args)).permute(2, 0, 1).contiguous().to(img.device)
