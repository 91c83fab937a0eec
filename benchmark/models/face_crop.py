"""Face cropping for any backbone (config ``align``): the detected, aligned face instead of the whole image.

``align: yunet`` puts SFace's own preprocessing (``faces.FaceAligner``: YuNet, the face nearest the image
centre, its 5 landmarks warped onto SFace's 112x112 template by OpenCV's ``alignCrop``, the central
square when no face is found) in front of a backbone that takes whole images (``efficientnet_lite0``,
``resnet18``, ``timm:...``), as competition winners fed ImageNet backbones face crops. ``align: mtcnn``
finds the face with MTCNN instead (facenet-pytorch: its P/R/O-Net weights ship in the wheel; the face
nearest the centre, its box and 5 landmarks as a YuNet row) and warps it with the same ``alignCrop``, so
the two differ only by detector.

The 112x112 crop is then the backbone's input: ``backbones.adapt`` sets ``resize`` to ``image_size``, so
the eval view resizes the whole crop to ``image_size`` (no centre crop), and it is normalized as the
backbone expects. The aligner's identity is part of every feature key (``Preprocessing.align``); the
detections are cached per image set like SFace's (yunet's are SFace's own entries), and the images that
fell back to the central square are counted in the record (``align/no_face``).
"""

from __future__ import annotations

import hashlib
import importlib
import threading
from pathlib import Path

import numpy as np
import torch

from benchmark.models import faces

#: the config's values (``Config.align``)
NAMES = ("none", "yunet", "mtcnn")
MTCNN_PIP = "pip install --no-deps facenet-pytorch"
#: facenet-pytorch's defaults (the smallest face side found, the three stages' thresholds, the pyramid
#: step), part of the identity
MTCNN_MIN_FACE = 20
MTCNN_THRESHOLDS = (0.6, 0.7, 0.7)
MTCNN_FACTOR = 0.709
#: pixels per MTCNN call (a batch of same-size images; bounds the pyramid's memory on large images)
_BATCH_PIXELS = 4_000_000


def _mtcnn_module():
    """facenet-pytorch's MTCNN module (ImportError, or whatever an incompatible install raises)."""
    return importlib.import_module("facenet_pytorch.models.mtcnn")


def unavailable(name: str) -> str | None:
    """Why ``align=name`` cannot run on this machine (one line with the fix), or None."""
    if name == "none":
        return None
    reason = faces.unavailable()  # YuNet, and alignCrop's template (OpenCV's FaceRecognizerSF)
    if reason:
        return f"align={name} {reason}"
    if name == "mtcnn":
        try:
            _mtcnn_module()
        except Exception as exc:  # not installed, or an install that does not import with this torch
            return (f"align=mtcnn needs facenet-pytorch ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                    f"it pins an older torch, so install it without its dependencies: {MTCNN_PIP}")
    return None


class MtcnnAligner(faces.FaceAligner):
    """MTCNN detection (the face nearest the centre, as a YuNet row) + SFace's 5-point alignment."""

    def __init__(self):
        super().__init__()
        module = _mtcnn_module()
        data = Path(module.__file__).resolve().parent.parent / "data"
        h = hashlib.sha256()
        for stage in ("pnet", "rnet", "onet"):
            h.update(faces.file_digest(str(data / f"{stage}.pt")).encode())
        self.identity = (f"mtcnn:{h.hexdigest()[:16]}:min{MTCNN_MIN_FACE}:thresholds"
                         f"{'-'.join(map(str, MTCNN_THRESHOLDS))}:factor{MTCNN_FACTOR}:nearest-centre:"
                         f"{self.alignment()}:fallback-centre-square")
        self._module, self._net, self._lock = module, None, threading.Lock()

    def _mtcnn(self):
        with self._lock:
            if self._net is None:
                self._net = self._module.MTCNN(min_face_size=MTCNN_MIN_FACE, thresholds=list(MTCNN_THRESHOLDS),
                                               factor=MTCNN_FACTOR, keep_all=True, device="cpu").eval()
            return self._net

    def detect(self, img: torch.Tensor) -> np.ndarray:
        return self.detect_all([img])[0].numpy()

    def detect_all(self, images: list[torch.Tensor]) -> torch.Tensor:
        """[n, 16] rows as ``FaceAligner.detect`` gives them ([found, x, y, w, h, 5 landmarks (x, y) in
        YuNet's order, score]), images of one size detected together."""
        from facenet_pytorch.models.utils.detect_face import detect_face

        net = self._mtcnn()
        rows = np.zeros((len(images), 16), np.float32)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            by_size.setdefault(tuple(img.shape[-2:]), []).append(i)
        for (h, w), members in by_size.items():
            step = max(1, _BATCH_PIXELS // (h * w))
            for a in range(0, len(members), step):
                chunk = members[a:a + step]
                hwc = torch.stack([images[i].cpu() for i in chunk]).permute(0, 2, 3, 1).contiguous()
                with torch.no_grad():
                    boxes, points = detect_face(hwc, net.min_face_size, net.pnet, net.rnet, net.onet,
                                                net.thresholds, net.factor, torch.device("cpu"))
                for i, box, point in zip(chunk, boxes, points):
                    rows[i] = _nearest_centre(np.asarray(box, np.float64), np.asarray(point, np.float64), w, h)
        return torch.from_numpy(rows)


def _nearest_centre(boxes: np.ndarray, points: np.ndarray, w: int, h: int) -> np.ndarray:
    """The YuNet-format row of the face whose box centre is nearest the image centre (zeros: none).
    MTCNN's boxes are (x1, y1, x2, y2, probability), its landmarks the eyes, nose and mouth corners
    left to right in the image, which is YuNet's order."""
    if not len(boxes):
        return np.zeros(16, np.float32)
    centres = (boxes[:, :2] + boxes[:, 2:4]) / 2
    k = int(np.argmin(((centres - (w / 2, h / 2)) ** 2).sum(1)))
    x1, y1, x2, y2, prob = boxes[k]
    return np.concatenate([[1.0, x1, y1, x2 - x1, y2 - y1], points[k].reshape(10), [prob]]).astype(np.float32)


#: ``align`` -> the aligner class (``BackboneSpec.align``: made once per frozen backbone)
ALIGNERS: dict[str, type[faces.FaceAligner]] = {"yunet": faces.FaceAligner, "mtcnn": MtcnnAligner}
