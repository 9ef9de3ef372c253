"""`ifnd linear --config configs/imagenet_linear.yaml` (MoCo's main_lincls protocol) end to end on a
tiny generated ImageFolder tree, and its pieces."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ifnd.cli import main
from ifnd.data.views import build_eval_transform
from ifnd.eval.linear import FrozenEncoder, step_decay
from ifnd.models.backbones import build_backbone


def _tree(root, per_class=6):
    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"n0{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((24, 30, 3), 60 + 120 * c, dtype=np.uint8) + rng.integers(0, 40, (24, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"n0{c}" / f"{i}.JPEG", quality=90)


def test_imagenet_linear_config_end_to_end(tmp_path, checkpoint):
    _tree(tmp_path / "train")
    _tree(tmp_path / "val", per_class=3)
    out = tmp_path / "lin"
    code = main(["linear", "--checkpoint", str(checkpoint), "--config", "configs/imagenet_linear.yaml",
                 "--set", f"data.root={tmp_path / 'train'}", "--set", f"data.test_root={tmp_path / 'val'}",
                 "--set", "data.image_size=16", "--set", "linear.eval_resize=18", "--set", "linear.epochs=3",
                 "--set", "linear.lr_steps=[1, 2]", "--set", "linear.batch_size=4", "--set", "data.num_workers=0",
                 "--set", "device=cpu", "--set", f"output_dir={out}"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["linear_protocol"] == "moco" and 0 <= metrics["top1"] <= 100 and metrics["top5"] == 100.0
    assert [h["lr"] for h in metrics["history"]] == pytest.approx([3.0, 0.3, 0.3])  # lr for the next step
    assert (out / "checkpoints" / "last.pt").is_file() and list((out / "index").glob("*.npz"))


def test_step_decay_divides_by_ten_at_each_milestone():
    decay = step_decay([60, 80])
    assert [decay(e * 10, 10) for e in (0, 59, 60, 79, 80, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_moco_pieces_unnormalised_features_and_resize_then_crop():
    frozen = FrozenEncoder(build_backbone("small_cnn")[0], normalize=False)
    out = frozen(torch.randn(3, 3, 16, 16))
    assert not torch.allclose(out.norm(dim=1), torch.ones(3))
    image = Image.fromarray(np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3))
    cropped = build_eval_transform(16, False, resize=18)(image)
    assert cropped.shape == (3, 16, 16) and not torch.equal(cropped, build_eval_transform(16, False)(image))
