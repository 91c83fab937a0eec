"""Where the frozen network's arithmetic runs (config ``runtime``): torch eager, or ONNX Runtime.

On a CPU the frozen pass is nearly all of a run, and ONNX Runtime runs the same networks several times
faster than torch eager (``benchmarks/runtime_speed.py``). The network is exported once per
(backbone, weights identity, input size, freeze boundary, torch version) into ``<cache>/onnx/``,
locked and written atomically like a feature entry, and verified against torch on a fixed batch
before it is used: its features must lie within ``TOLERANCE`` of torch's. An export that fails or
does not verify (an operator ONNX Runtime lacks, a numerical difference) falls back to torch with one
logged line naming the backbone and the reason — never a wrong feature. The resolved runtime is part
of every feature key (``Preprocessing.runtime``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmark.features.spec import Preprocessing
from benchmark.files import atomic_path, locked, write_atomic
from benchmark.models.backbones import FrozenBackbone

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnxruntime")
#: the largest |feature difference| to torch an export may show on the verification batch
TOLERANCE = 1e-4
_OPSET = 17
_VERIFY_BATCH = 4

#: export file -> why it is not used (None: verified), per process: verified once, a fallback logged once
_VERDICTS: dict[str, str | None] = {}
#: export file -> its verified session
_NETWORKS: dict[str, OrtNetwork] = {}


def _onnxruntime():
    try:
        import onnxruntime
    except ModuleNotFoundError:
        return None
    return onnxruntime


def _export_path(prep: Preprocessing, root: Path) -> Path:
    """The export's file: one per network identity and input size (not per normalization or view)."""
    ident = {"backbone": prep.backbone, "weights": prep.weights, "image_size": prep.image_size,
             "trainable_blocks": prep.trainable_blocks, "torch": torch.__version__, "opset": _OPSET}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]
    return root / "onnx" / f"{digest}.onnx"


@contextmanager
def _exportable():
    """The fused attention fast path (nn.MultiheadAttention under no_grad) has no ONNX operator; its
    plain path computes the same function and exports."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _export(frozen: FrozenBackbone, prep: Preprocessing, path: Path) -> None:
    if path.exists():  # before the lock: a read-only cache folder still serves a valid export
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.with_suffix(".lock")):
        if path.exists():
            return
        x = torch.zeros(2, 3, prep.image_size, prep.image_size)
        with _exportable(), atomic_path(path) as tmp, torch.no_grad():
            torch.onnx.export(frozen.net.cpu(), (x,), str(tmp), dynamo=False, opset_version=_OPSET,
                              input_names=["pixels"], output_names=["features"],
                              dynamic_axes={"pixels": {0: "n"}, "features": {0: "n"}})


class OrtNetwork(nn.Module):
    """The exported frozen network in an ONNX Runtime session, behind the interface the pass calls
    (``device``, ``spec``, ``aligner``, ``weights_id``, called on float NCHW)."""

    def __init__(self, path: Path, frozen: FrozenBackbone):
        super().__init__()
        ort = _onnxruntime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()  # the machine's cores, as torch uses them
        # no busy-waiting between batches: the decoding threads share these cores (measured faster here)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.spec, self.weights_id, self.aligner = frozen.spec, frozen.weights_id, frozen.aligner
        self.register_buffer("_anchor", torch.zeros(0))

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"pixels": x.detach().float().contiguous().numpy()})[0])


def _verify(net: OrtNetwork, frozen: FrozenBackbone, prep: Preprocessing) -> str | None:
    """Why the export's features differ from torch's on a fixed batch, or None when they agree."""
    from benchmark.features.views import to_input

    pixels = torch.randint(0, 256, (_VERIFY_BATCH, 3, prep.image_size, prep.image_size),
                           generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    x = to_input(pixels, prep)
    with torch.no_grad():
        want = frozen(x.contiguous(memory_format=torch.channels_last)).float()
    got = net(x)
    if got.shape != want.shape:
        return f"output shape {list(got.shape)} instead of torch's {list(want.shape)}"
    diff = float((got - want).abs().max())
    if not np.isfinite(diff) or diff > TOLERANCE:
        return f"features differ from torch's by up to {diff:.2g} (> {TOLERANCE:g})"
    return None


def resolve(requested: str, frozen: FrozenBackbone, prep: Preprocessing, root: Path | str) -> str:
    """The runtime the frozen pass of ``prep`` uses: ``torch`` or ``onnxruntime`` for a torch network,
    else what runs the backbone (``BackboneSpec.runtime``: ``onnxruntime``, ``opencv-dnn``, ``dlib``).

    ``auto`` = ONNX Runtime on the CPU in fp32 where the export verifies, torch elsewhere (CUDA: a GPU
    check decides later). Networks that are not torch modules (``onnx:``, SFace, dlib) and explicit
    ``torch`` stay as they are. A failed or unverified export falls back to torch (logged once).
    """
    if frozen.spec.runtime != "torch":  # not a torch network: nothing to export
        return frozen.spec.runtime
    if requested == "torch":
        return "torch"
    if prep.device != "cpu" or prep.precision != "fp32":
        if requested == "onnxruntime":
            log.warning("runtime=onnxruntime runs fp32 on the CPU; using torch for %s on %s (%s)",
                        prep.backbone, prep.device, prep.precision)
        return "torch"
    if _onnxruntime() is None:
        if requested == "onnxruntime":
            log.warning("runtime=onnxruntime: onnxruntime is not installed (pip install onnxruntime); "
                        "using torch for %s", prep.backbone)
        return "torch"
    path = _export_path(prep, Path(root))
    if str(path) not in _VERDICTS:
        _VERDICTS[str(path)] = reason = _verdict(frozen, prep, path)
        if reason:
            log.warning("runtime %s: ONNX Runtime not used for backbone=%s (%s); using torch",
                        requested, prep.backbone, reason)
    return "torch" if _VERDICTS[str(path)] else "onnxruntime"


def _verdict(frozen: FrozenBackbone, prep: Preprocessing, path: Path) -> str | None:
    """Why the export of ``prep`` cannot serve (None: it is loaded into ``_NETWORKS``, verified). A
    file that does not load or verify may be damaged (a truncated copy, another writer's garbage):
    it is made anew once; a fresh export that still fails is the network's verdict, kept beside it
    (``.unverified``) so that later processes go straight to torch instead of exporting again."""
    remembered = path.with_suffix(".unverified")
    if remembered.exists():
        return remembered.read_text()
    reason = None
    for fresh in (not path.exists(), True):
        if fresh and path.exists():
            path.unlink(missing_ok=True)
        try:
            _export(frozen, prep, path)
            net = OrtNetwork(path, frozen)
            reason = _verify(net, frozen, prep)
        except Exception as exc:  # an operator without ONNX export, a graph ORT cannot load
            reason = f"export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        if reason is None:
            _NETWORKS[str(path)] = net
            return None
        if fresh:
            break
    try:
        write_atomic(remembered, reason)
    except OSError:  # a read-only cache: the next process finds the same verdict
        pass
    return reason


def network(frozen: FrozenBackbone, prep: Preprocessing, root: Path | str) -> nn.Module:
    """What computes the features of ``prep``: the network as it is, or a torch module's verified ONNX
    export."""
    if prep.runtime == frozen.spec.runtime:
        return frozen
    path = str(_export_path(prep, Path(root)))
    if path not in _NETWORKS:  # a Preprocessing built by hand rather than through resolve()
        _NETWORKS[path] = OrtNetwork(Path(path), frozen)
    return _NETWORKS[path]
