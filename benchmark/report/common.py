"""The report's shared vocabulary: the baseline, the ablation keys, display names and the one
colour per architecture (what a column *is* lives in ``benchmark.results.schema``)."""

from __future__ import annotations

import numpy as np

from benchmark.config import legacy
from benchmark.results.schema import DEFAULTS, missing, norm

#: the report's controlled settings (Table 1): LR 0.001, 3 epochs, batch 32, augmentation and
#: ImageNet normalization on, a trained head
BASELINE = {k: DEFAULTS[k] for k in ("lr", "epochs", "batch_size", "augment", "normalize", "embedding")}
#: design choices an ablation (Figure 3) flips one at a time; lr/epochs/backbone have Figures 1, 2, 4
ABLATION_KEYS = ("batch_size", "augment", "normalize", "embedding", "weights", "dropout", "patience",
                 "monitor", "embedding_dim", "image_size", "resize", "engine")

ARCH_NAMES = {"efficientnet_b0": "EfficientNet-B0", "vit_b_16": "ViT-B/16", "resnet50": "ResNet50",
              "resnet18": "ResNet18", "efficientnet_lite0": "EfficientNet-Lite0", "sface": "SFace (face model)",
              "dlib": "dlib ResNet (face model)", "ensemble": "Ensemble"}
#: index into seaborn's "colorblind" palette; EfficientNet-B0 takes the vermillion (red) the report's
#: Figure 5 shows it in
_FIXED_COLORS = {"efficientnet_b0": 3, "vit_b_16": 0, "resnet50": 2, "resnet18": 1, "efficientnet_lite0": 4}


def arch_name(backbone) -> str:
    return ARCH_NAMES.get(str(backbone), str(backbone))


def palette(backbones=()) -> dict[str, str]:
    """One colour per backbone, the same in every figure: known backbones keep fixed colours,
    others take the remaining colours of seaborn's colorblind palette in sorted order."""
    import seaborn as sns

    colors = sns.color_palette("colorblind", 10).as_hex()
    out = {b: colors[i] for b, i in _FIXED_COLORS.items()}
    spare = [c for i, c in enumerate(colors) if i not in _FIXED_COLORS.values() and i != 7]  # 7: grey
    for i, b in enumerate(sorted({str(b) for b in backbones} - set(out))):
        out[b] = spare[i % len(spare)]
    return out


def arch_order(backbones) -> list[str]:
    """Known architectures in the report's order, then the others sorted."""
    known = [b for b in _FIXED_COLORS if b in set(map(str, backbones))]
    return known + sorted({str(b) for b in backbones} - set(known))


def fmt_num(v, digits: int = 3) -> str:
    """A number as the report writes it: 0.001, 0.1, 438.7 (no trailing zeros for small settings)."""
    if missing(v):
        return "–"
    if isinstance(v, (float, np.floating)) and not float(v).is_integer():
        return f"{float(v):.{digits}g}"
    return str(norm(v))


def describe(key: str, value) -> str:
    """A config value in words, for ablation and sweep labels."""
    value = norm(value)
    if key == "batch_size":
        return f"batch size {value}"
    if key == "normalize":
        return "ImageNet normalization" if value else "no normalization"
    if key == "augment":
        return {"none": "no augmentation", "report": "augmentation",
                "strong": "strong augmentation"}.get(legacy(key, value), f"augment={value}")
    if key == "embedding":
        return "frozen features (no head)" if value == "backbone" else "trained head"
    if key == "epochs":
        return f"{value} epoch{'s' if value != 1 else ''}"
    if key == "lr":
        return f"LR {fmt_num(value)}"
    if key == "weights":
        return f"{value} weights"
    return f"{key}={value}"
