"""Training (report section 2.3, and the recipes of its section 4): the head — and with
``trainable_blocks`` the backbone's last blocks — on the engine's batches, with the config's loss,
miner, optimizer and schedule; validation every epoch, early stopping on the monitored value, and the
best epoch's weights kept."""

from __future__ import annotations

import copy
import itertools
import math
import sys
import time
import warnings
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from benchmark.config import Config
from benchmark.evaluation.evaluate import split_metrics
from benchmark.models.backbones import TrainableBlocks, head_dropout
from benchmark.models.head import Embedder, ProjectionHead, embed
from benchmark.results import schema
from benchmark.training.losses import build_loss, build_miner, compute
from benchmark.training.optim import build_optimizer, build_scheduler
from benchmark.training.sampling import one_domain

if TYPE_CHECKING:  # engines import training.sampling
    from benchmark.features.engines import Engine


class Trained(nn.Module):
    """What ``fit`` trains: ``head`` maps the engine's features to the retrieval embedding (the
    projection head, after the trainable backbone blocks when there are any); ``loss`` holds the
    loss's own weights (a classifier, class centres), discarded after training."""

    def __init__(self, head: nn.Module, loss: nn.Module):
        super().__init__()
        self.head, self.loss = head, loss


def _val_loss(model: Trained, feats: torch.Tensor, classes: torch.Tensor, render: torch.Tensor | None) -> float:
    """The training loss (no miner; ``render``: cross-domain positives only) on validation items whose
    identity is a training class (closed-set)."""
    known = classes >= 0
    if not known.any():
        return float("nan")
    model.eval()
    with torch.no_grad():
        return float(compute(model.loss, None, embed(model.head, feats[known]), classes[known],
                             None if render is None else render[known]))


def _warn_one_domain(engine: Engine) -> None:
    """Once per run: how many training identities ``domain_balance`` cannot balance (one domain only)."""
    names = engine.df["identity"].to_numpy()[engine.train_idx]
    lone = one_domain(names, engine.renders(engine.train_idx))
    if lone:
        warnings.warn(f"domain_balance: {len(lone)} of {len(set(names))} training identities have images of one "
                      f"domain only (e.g. {lone[0]}); their batches draw from that domain alone", stacklevel=2)


def _build(cfg: Config, engine: Engine) -> Trained:
    """The trained modules, initialized from ``cfg.seed`` (head first: today's RNG order)."""
    head = ProjectionHead(engine.frozen.spec.dim, cfg.embedding_dim, head_dropout(cfg, engine.frozen.spec))
    loss = build_loss(cfg, engine.n_classes)
    if engine.trainable_units:
        head = Embedder(TrainableBlocks(engine.trainable_units, cfg.bn_train), head, cfg.eval_batch_size)
    return Trained(head, loss).to(engine.device)


def fit(cfg: Config, engine: Engine, on_epoch: Callable[[dict], None] | None = None,
        should_stop: Callable[[list[dict]], bool] | None = None) -> tuple[Trained, list[dict], int]:
    """Train; returns (model with the best epoch's weights, per-epoch history, best epoch).

    ``should_stop(history)`` is asked after every epoch (a sweep's early termination, e.g. Hyperband):
    True ends training there, with the best epoch so far kept, as early stopping does."""
    device = engine.device
    torch.manual_seed(cfg.seed)
    model = _build(cfg, engine)
    miner = build_miner(cfg)
    if isinstance(model.head, Embedder):  # the backbone blocks learn at their own rate
        groups = [{"params": [*model.head.head.parameters(), *model.loss.parameters()]},
                  {"params": list(model.head.trunk.parameters()), "lr": cfg.backbone_learning_rate}]
    else:
        groups = [{"params": list(model.parameters())}]
    opt = build_optimizer(cfg, groups)
    n_batches = engine.n_batches()
    scheduler = build_scheduler(cfg, opt, n_batches)
    val_idx = engine.split_index("val")
    val_labels = engine.df["label"].to_numpy()[val_idx]
    val_sides = engine.df["side"].to_numpy()[val_idx] if "side" in engine.df else None
    val_classes = torch.as_tensor(engine.class_of[val_labels], device=device)
    if cfg.domain_balance:
        _warn_one_domain(engine)
    cross = cfg.positives == "cross_domain"  # then: which items are renders (per batch: the engine's batch order)
    train_render = torch.as_tensor(engine.renders(engine.train_idx), device=device) if cross else None
    val_render = torch.as_tensor(engine.renders(val_idx), device=device) if cross else None
    sign = 1.0 if cfg.monitored == "val/loss" else -1.0  # lower is better after the sign
    best, best_epoch, best_state, history = math.inf, 0, None, []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        model.train()
        total, count = 0.0, 0
        batches = engine.train_batches(epoch - 1)
        first = next(batches)  # features are extracted (own progress bar) before the epoch bar starts
        renders = [train_render[b.to(device)] for b in engine.batches(epoch - 1)] if cross else itertools.repeat(None)
        for (x, y), render in tqdm(zip(itertools.chain([first], batches), renders), total=n_batches,
                                   desc=f"epoch {epoch}/{cfg.epochs}", leave=False, mininterval=1):
            loss = compute(model.loss, miner, model.head(x.float()), y, render)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {float(loss)} in epoch {epoch} "
                                         f"(lr={cfg.lr}); lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if scheduler is not None:
                scheduler.step()
            total += loss.item() * len(y)
            count += len(y)
        row = {"epoch": epoch, "train/loss": total / count, "lr": lr}
        if len(val_idx):
            feats = engine.eval_features("val")
            row["val/loss"] = _val_loss(model, feats, val_classes, val_render)
            val = split_metrics(embed(model.head, feats), val_labels, val_sides, cfg)
            unscorable = schema.unscorable({f"val/{k}": val.get(k) for k in ("n_queries", "identities")})
            row |= {f"val/{k}": None if unscorable else v for k, v in val.items() if k not in schema.SPLIT_FACTS}
        row["epoch_s"] = time.perf_counter() - t0
        history.append(row)
        tqdm.write(f"epoch {epoch}/{cfg.epochs}: " + "  ".join(
            f"{k} {'n/a' if row[k] is None or math.isnan(row[k]) else f'{row[k]:.4g}'}"  # open-set val/loss: NaN
            for k in ("train/loss", "val/loss", "val/score", "epoch_s") if k in row),
            file=sys.stderr)
        if on_epoch:
            on_epoch(row)
        monitored = row.get(cfg.monitored)
        value = math.nan if monitored is None else sign * monitored
        if best_state is None or value < best:  # NaN never improves; epoch 1 is kept at least
            best, best_epoch = (value if not math.isnan(value) else math.inf), epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= cfg.patience > 0:
            break
        if should_stop is not None and epoch < cfg.epochs and should_stop(history):
            break
    model.load_state_dict(best_state)
    return model, history, best_epoch
