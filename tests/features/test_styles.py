"""Each style: deterministic (the same bytes twice), different from its input, and the property it
claims; unknown names and parameters list the valid ones."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from benchmark.features import styles

pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A 96x80 RGB image with smooth regions, edges and noise (a stand-in for a photograph)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:96, :80]
    img = np.stack([x * 3, y * 2, (x + y) * 1.5], 2).astype(np.float64)
    img[20:60, 15:50] = [200, 60, 90]
    img[(y - 70) ** 2 + (x - 55) ** 2 < 150] = [30, 170, 40]
    return np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", sorted(styles.STYLES))
def test_style_is_deterministic_and_changes_the_pixels(name, photo):
    first = styles.render_array(photo, name)
    assert first.shape == photo.shape and first.dtype == np.uint8
    assert first.tobytes() == styles.render_array(photo.copy(), name).tobytes()
    assert np.abs(first.astype(int) - photo).mean() > 2  # a real change, not rounding
    tensor = torch.from_numpy(photo).permute(2, 0, 1)
    assert torch.equal(styles.render(tensor, name), torch.from_numpy(first).permute(2, 0, 1))


def test_none_is_the_identity(photo):
    tensor = torch.from_numpy(photo).permute(2, 0, 1)
    assert styles.render(tensor, "none") is tensor and styles.identity("none") is None


@pytest.mark.parametrize("colors", [3, 8])
def test_cartoon_has_at_most_its_colours_before_edges_and_edges_are_black(colors, photo):
    flat = styles.render_array(photo, "cartoon", {"colors": colors, "edges": False})
    assert len(np.unique(flat.reshape(-1, 3), axis=0)) <= colors
    drawn = styles.render_array(photo, "cartoon", {"colors": colors})
    changed = (drawn != flat).any(2)
    assert changed.any() and (drawn[changed] == 0).all()  # edges only ever paint black over it


@pytest.mark.parametrize("size", [16, 24])
def test_lowres_has_no_detail_above_its_size(size, photo):
    """It equals its own down-up resampling (up to rounding), unlike the input: nothing finer than
    ``size`` pixels is left to lose."""
    out = styles.render_array(photo, "lowres", {"size": size})
    again = styles.render_array(out, "lowres", {"size": size})
    assert np.abs(again.astype(int) - out).mean() < 3 < np.abs(out.astype(int) - photo).mean()


def test_grey_and_sketch_have_equal_channels_dark_is_darker_cast_shifts_colour(photo):
    for name in ("grey", "sketch"):
        out = styles.render_array(photo, name)
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert styles.render_array(photo, "dark").astype(int).sum() < 0.6 * photo.astype(int).sum()
    warm = styles.render_array(photo, "cast").astype(float).mean((0, 1))
    assert warm[0] > photo[..., 0].mean() and warm[2] < photo[..., 2].mean()


def test_parameters_change_the_output_and_the_identity(photo):
    assert not np.array_equal(styles.render_array(photo, "lowres", {"size": 8}), styles.render_array(photo, "lowres"))
    assert styles.identity("lowres", {"size": 8}) != styles.identity("lowres")
    assert styles.identity("lowres") == {"style": "lowres", "v": 1, "size": 24}


def test_unknown_style_or_parameter_lists_the_valid_ones(photo):
    with pytest.raises(ValueError, match="unknown style 'toon'; valid styles: none, stylization, cartoon"):
        styles.render_array(photo, "toon")
    with pytest.raises(ValueError, match=r"style lowres has no parameter.s. px; its parameters: size=24 \(an integer"):
        styles.check("lowres", {"px": 3})


@pytest.mark.parametrize("name, args, why", [
    ("cartoon", {"colors": 0}, "colors=0 is not valid: must be an integer in [1, 256]"),  # OpenCV's k-means asserted K > 0
    ("cartoon", {"colors": "abc"}, "colors='abc' is not valid: must be an integer in [1, 256]"),
    ("cartoon", {"colors": 2.5}, "colors=2.5 is not valid: must be an integer"),
    ("cartoon", {"edges": "maybe"}, "edges='maybe' is not valid: must be true or false"),
    ("cartoon", {"edge_block": 8}, "edge_block=8 is not valid: must be an odd integer in [3, 99]"),
    ("lowres", {"size": -3}, "size=-3 is not valid: must be an integer in [1, 4096]"),  # one pixel: flat colour
    ("cast", {"gains": [1, 2]}, "gains=[1, 2] is not valid: must be a list of 3 numbers, each in [0, 10]"),
    ("dark", {"gain": 0}, "gain=0 is not valid: must be a number in [0.01, 10]"),
])
def test_a_parameter_value_that_cannot_render_names_its_valid_values(name, args, why, photo):
    with pytest.raises(ValueError, match=re.escape(f"style_args.{name}.{why}")):
        styles.check(name, args)
    with pytest.raises(ValueError, match=re.escape(why)):
        styles.render_array(photo, name, args)
    for n in styles.STYLES:  # every default is valid
        styles.check(n, styles.defaults(n))
