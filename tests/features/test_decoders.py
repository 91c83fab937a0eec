"""The torchvision decoder path on CPU (the code nvjpeg runs on CUDA): odd files in a batch are
decoded, not fatal; what it cannot decode, and every file that is not a JPEG, goes to PIL, counted;
the pixels equal PIL's."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torchvision.io
from PIL import Image

from benchmark.features import decoders
from benchmark.features.views import decode

CPU = torch.device("cpu")


@pytest.fixture
def odd_files(tmp_path):
    """A batch with the files that fail a batched nvjpeg call: CMYK, PNG named .jpg, progressive."""
    arr = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    rgb = Image.fromarray(arr)
    files = {"rgb.jpg": lambda p: rgb.save(p, quality=90),
             "cmyk.jpg": lambda p: rgb.convert("CMYK").save(p, quality=90),
             "png.jpg": lambda p: rgb.save(p, format="PNG"),
             "grey.jpg": lambda p: rgb.convert("L").save(p),
             "progressive.jpg": lambda p: rgb.save(p, progressive=True)}
    paths = []
    for name, write in files.items():
        write(tmp_path / name)
        paths.append(str(tmp_path / name))
    return paths


def _decode(paths, decoder="torchvision"):
    with ThreadPoolExecutor(2) as pool:
        return decoders.DECODERS[decoder](paths, CPU, pool)


def test_odd_files_in_a_batch_decode_like_pil(odd_files):
    images, fell_back = _decode(odd_files)
    assert [p.rsplit("/", 1)[1] for p in fell_back] == ["png.jpg"]  # not a JPEG: straight to PIL
    for path, img in zip(odd_files, images):
        assert img.dtype == torch.uint8 and img.shape == (3, 40, 50)
        assert torch.equal(img, decode(path)), path  # libjpeg on both sides: bit-identical


def test_a_batch_failure_retries_file_by_file(odd_files, monkeypatch):
    """nvjpeg fails a whole batched call for one CMYK file: the others stay on the fast path."""
    real = torchvision.io.decode_jpeg
    fast = []

    def nvjpeg_like(data, **kw):
        items = data if isinstance(data, list) else [data]
        if any(bytes(d[:3].tolist()) == b"\xff\xd8\xff" and b"Adobe" in bytes(d[:200].tolist()) for d in items):
            raise RuntimeError("nvjpeg: unsupported colour space")  # PIL writes CMYK with an Adobe marker
        fast.extend(items)
        return real(data, **kw)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", nvjpeg_like)
    images, fell_back = _decode(odd_files)
    assert sorted(p.rsplit("/", 1)[1] for p in fell_back) == ["cmyk.jpg", "png.jpg"]
    assert len(fast) == 3  # rgb, grey, progressive, one by one after the batched call failed
    assert all(torch.equal(img, decode(p)) for p, img in zip(odd_files, images))


def test_unreadable_file_names_itself(odd_files, tmp_path):
    data = (tmp_path / "rgb.jpg").read_bytes()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="broken.jpg"):
        _decode([*odd_files, str(broken)])


def test_fallbacks_are_logged(caplog):
    with caplog.at_level("WARNING"):
        decoders.report_fallbacks("torchvision", ["a.jpg", "b.jpg"], 10)
        decoders.report_fallbacks("torchvision", [], 10)
    assert len(caplog.records) == 1 and "2 of 10 files fell back to PIL (a.jpg, b.jpg)" in caplog.text


def test_auto_decoder_is_per_device():
    assert decoders.resolve("auto", CPU) == "pil"
    assert decoders.resolve("auto", torch.device("cuda")) == "torchvision"
    assert decoders.resolve("torchvision", CPU) == "torchvision"


# --- files that are not JPEG (issue 23, rule 8): PIL's, whatever the batch holds -------------------
@pytest.fixture
def images(tmp_path):
    """One picture written as JPEG, PNG, BMP, greyscale PNG, 16-bit PNG, and a JPEG named ``.png``."""
    arr = np.random.default_rng(1).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    rgb = Image.fromarray(arr)
    grey16 = Image.fromarray(arr[..., 0].astype(np.uint16) * 257)
    writers = {"a.jpg": lambda p: rgb.save(p, quality=90), "b.png": lambda p: rgb.save(p),
               "c.bmp": lambda p: rgb.save(p), "grey.png": lambda p: rgb.convert("L").save(p),
               "grey16.png": lambda p: grey16.save(p), "jpeg.png": lambda p: rgb.save(p, format="JPEG")}
    for name, write in writers.items():
        write(tmp_path / name)
    return {name: str(tmp_path / name) for name in writers}


def _like_pil(paths):
    """Decoded by decoder=torchvision, pixel for pixel as decoder=pil does: (files that fell back)."""
    images, fell_back = _decode(paths)
    pil, _ = _decode(paths, "pil")
    assert len(images) == len(paths)
    for path, img, want in zip(paths, images, pil):
        assert img.dtype == torch.uint8 and torch.equal(img, want), path
    return [p.rsplit("/", 1)[1] for p in fell_back]


def test_a_batch_of_only_pngs(images):
    """decode_jpeg([]) raised 'Input list must contain at least one element': any PNG dataset on a GPU."""
    assert _like_pil([images["b.png"], images["grey.png"]]) == ["b.png", "grey.png"]


def test_a_mixed_batch_keeps_its_order(images):
    paths = [images[n] for n in ("b.png", "a.jpg", "c.bmp", "jpeg.png", "grey.png")]
    assert _like_pil(paths) == ["b.png", "c.bmp", "grey.png"]


@pytest.mark.parametrize("name", ["c.bmp", "grey.png", "grey16.png"])
def test_a_batch_of_one_non_jpeg(images, name):
    assert _like_pil([images[name]]) == [name]


def test_content_decides_not_the_suffix(images):
    """A JPEG named .png takes the fast path; a PNG named .jpg (``odd_files``) goes to PIL."""
    assert _like_pil([images["jpeg.png"]]) == []


def test_an_empty_batch():
    assert _decode([]) == ([], []) == _decode([], "pil")


def test_a_missing_file_is_reported_as_pil_reports_it(images, tmp_path):
    missing = str(tmp_path / "gone.jpg")
    for decoder in ("pil", "torchvision"):
        with pytest.raises(ValueError, match=f"cannot read image {missing}"):
            _decode([images["a.jpg"], missing], decoder)


def test_the_deprecation_warning_is_silenced_at_the_call_only(images):
    """torchvision 0.29 warns on every decoder call (deprecated for torchcodec, not a dependency):
    even with warnings as errors, decoding works; a direct torchvision call still warns."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _like_pil([images["a.jpg"], images["b.png"]])
        with pytest.raises(DeprecationWarning, match="TorchVision are deprecated"):
            torchvision.io.decode_jpeg(decoders._jpeg_bytes(images["a.jpg"]))
