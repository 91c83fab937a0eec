"""Head training (report section 2.3): Adam + cross-entropy over the training identities, validation
every epoch, early stopping on the monitored value, and the best epoch's weights kept."""

from __future__ import annotations

import copy
import math
import time
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from benchmark.config import Config
from benchmark.engines import Engine
from benchmark.metrics import retrieval_metrics
from benchmark.models.backbones import head_dropout
from benchmark.models.head import HeadClassifier, embed


def _val_loss(model: HeadClassifier, feats: torch.Tensor, classes: torch.Tensor) -> float:
    """Cross-entropy on validation items whose identity is a training class (closed-set)."""
    known = classes >= 0
    if not known.any():
        return float("nan")
    model.eval()
    with torch.no_grad():
        return float(F.cross_entropy(model(feats[known].float()), classes[known]))


def fit(cfg: Config, engine: Engine,
        on_epoch: Callable[[dict], None] | None = None) -> tuple[HeadClassifier, list[dict], int]:
    """Train the head; returns (model with the best epoch's weights, per-epoch history, best epoch)."""
    device = engine.device
    torch.manual_seed(cfg.seed)
    model = HeadClassifier(engine.backbone.spec.dim, engine.n_classes, cfg.embedding_dim,
                           head_dropout(cfg)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    val_idx = engine.split_index("val")
    val_labels = engine.df["label"].to_numpy()[val_idx]
    val_classes = torch.as_tensor(engine.class_of[val_labels], device=device)
    sign = 1.0 if cfg.monitored == "val/loss" else -1.0  # lower is better after the sign
    best, best_epoch, best_state, history = math.inf, 0, None, []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        n_batches = -(-len(engine.train_idx) // cfg.batch_size)
        for x, y in tqdm(engine.train_batches(epoch - 1), total=n_batches, desc=f"epoch {epoch}/{cfg.epochs}",
                         leave=False, mininterval=1):
            loss = F.cross_entropy(model(x.float()), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {float(loss)} in epoch {epoch} "
                                         f"(lr={cfg.lr}); lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(y)
            count += len(y)
        row = {"epoch": epoch, "train/loss": total / count}
        if len(val_idx):
            feats = engine.eval_features("val")
            row["val/loss"] = _val_loss(model, feats, val_classes)
            row |= {f"val/{k}": v for k, v in retrieval_metrics(embed(model.head, feats), val_labels).items()
                    if k != "n_queries"}
        row["epoch_s"] = time.perf_counter() - t0
        history.append(row)
        if on_epoch:
            on_epoch(row)
        value = sign * row.get(cfg.monitored, math.nan)
        if best_state is None or value < best:  # NaN never improves; epoch 1 is kept at least
            best, best_epoch = (value if not math.isnan(value) else math.inf), epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= cfg.patience > 0:
            break
    model.load_state_dict(best_state)
    return model, history, best_epoch
