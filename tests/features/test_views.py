"""Augmentation policies: none = the eval view, report = RandomResizedCrop + flip (today's), strong =
the report's section 4.4 list; seeded views are reproducible; old true/false configs still load."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from benchmark.config import Config, from_dict, load_yaml
from benchmark.features.spec import POLICY_KEYS
from benchmark.features.views import eval_view, policy, train_view
from tiny_prep import make_prep


@pytest.fixture
def image():
    return torch.randint(0, 256, (3, 80, 70), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_none_is_the_eval_view(image):
    prep = make_prep(32, 40)
    assert torch.equal(train_view(image, prep, "none", seed=3), eval_view(image, prep))
    assert policy("none", 32) is None


def test_report_is_random_resized_crop_and_flip(image):
    prep = make_prep(32, 40)
    expected = v2.Compose([v2.RandomResizedCrop(32, antialias=True), v2.RandomHorizontalFlip()])
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        assert torch.equal(train_view(image, prep, "report", seed=seed), expected(image))


def test_strong_is_reproducible_and_stronger(image):
    prep = make_prep(32, 40)
    views = [train_view(image, prep, "strong", seed=s) for s in range(40)]
    assert all(v.shape == (3, 32, 32) and v.dtype == torch.uint8 for v in views)
    assert torch.equal(train_view(image, prep, "strong", seed=5), views[5])
    kinds = {type(t).__name__ for t in policy("strong", 32).transforms}
    assert {"RandomResizedCrop", "RandomHorizontalFlip", "RandomApply", "RandomPerspective", "ColorJitter",
            "RandomErasing"} <= kinds
    report = [train_view(image, prep, "report", seed=s) for s in range(40)]
    assert sum(not torch.equal(a, b) for a, b in zip(views, report)) >= 30
    # colour jitter / erasing: strong views spread pixel statistics more than crop + flip alone
    spread = lambda vs: torch.stack([v.float().mean() for v in vs]).std()  # noqa: E731
    assert spread(views) > spread(report)
    assert set(POLICY_KEYS) == {"none", "report", "strong"} and len(set(POLICY_KEYS.values())) == 3  # own keys


def test_old_boolean_augment_still_loads(tmp_path):
    assert Config(augment=True).augment == "report" and Config(augment=False).augment == "none"
    assert from_dict({"augment": "false"}).augment == "none"
    path = tmp_path / "config.yaml"
    path.write_text("augment: true\nlr: 0.01\n")
    assert load_yaml(path).augment == "report"
    with pytest.raises(ValueError, match="augment='heavy' is not valid; choose one of: none, report, strong"):
        from_dict({"augment": "heavy"})
