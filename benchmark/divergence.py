"""Did training diverge? Read off the per-epoch history after ``fit`` returns.

A learning rate far too large can blow the training loss up without ever reaching inf/NaN (that
case already fails the run): the run then ends "ok" with numbers from a broken head. Two signs,
either one enough (both hold for any loss that starts near chance and is being minimized):

- the loss *rose*: some epoch's mean training loss is more than ``RISE`` times the first epoch's;
- the loss ended *far above chance*: the last epoch's is more than ``CHANCE_FACTOR`` times
  log(number of training classes), the cross-entropy of guessing uniformly.
"""

from __future__ import annotations

import math

RISE = 2.0
CHANCE_FACTOR = 10.0


def divergence(history: list[dict], n_classes: int, key: str = "train/loss") -> str | None:
    """Why the run's training diverged, in one sentence, or None when it did not."""
    losses = [float(row[key]) for row in history if key in row and row[key] is not None]
    if not losses:
        return None
    first, last, peak = losses[0], losses[-1], max(losses)
    peak_epoch = losses.index(peak) + 1
    if len(losses) > 1 and peak > RISE * first and first > 0:
        return (f"training diverged: the training loss rose from {first:.3g} (epoch 1) to {peak:.3g} "
                f"(epoch {peak_epoch}); lower the learning rate")
    chance = math.log(max(n_classes, 2))
    if last > CHANCE_FACTOR * chance:
        return (f"training diverged: the final training loss {last:.3g} is over {CHANCE_FACTOR:g}x chance level "
                f"(log {n_classes} classes = {chance:.3g}); lower the learning rate")
    return None
