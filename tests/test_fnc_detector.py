"""The ``fnc`` detection mode: its masks on hand-made embeddings, the support views of the data path, a tiny
SimCLR run, and MoCo's memory version (the momentum encoder's views against the queue)."""

import pytest
import torch
import torch.nn.functional as F
from lightly.transforms import SimCLRTransform

from ifnd.config import ConfigError, resolve
from ifnd.data.build import build_sources, train_loader
from ifnd.data.device_augment import NUM_PARAMS, ViewSpec
from ifnd.data.fast_views import FastViews, build_train_views
from ifnd.data.views import IndexedViews, build_view_transform
from ifnd.falseneg.detectors import SupportViews, build_detector
from ifnd.pretrain.steps import momentum_support, support_embeddings
from ifnd.pretrain.task import PretrainTask
from ifnd.runtime.loop import Engine
from ifnd.runtime.sampler import ResumableSampler


def _detector(**detection):
    return build_detector(resolve({"detection": {"mode": "fnc", "warmup_epochs": 1, **detection}}), 8, 3, None)


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_a_candidate_near_a_support_view_is_flagged_and_the_anchors_own_views_are_not():
    det = _detector(fnc_support_views=2, fnc_top_k=10, fnc_threshold=0.7)
    assert det.support_views == 2 and det.levels == 1
    # anchor image 0: support views along x and y; anchor image 1: along z
    anchors = torch.stack([_unit([1, 0, 0], [0, 1, 0]), _unit([0, 0, 1], [0, 0, 1])])  # [B=2, S=2, D=3]
    # candidates: both views of image 0, both views of image 1, then image 5 near image 0's y view, image 6 far
    candidates = _unit([1, 0, 0], [1, 0.1, 0], [0, 0, 1], [0, 0.1, 1], [0.1, 1, 0], [-1, 0, 0])
    anchor_ids, candidate_ids = torch.tensor([0, 1]), torch.tensor([0, 0, 1, 1, 5, 6])
    support = SupportViews(anchors, candidates)
    det.start_epoch(0)
    assert det.masks(anchor_ids, candidate_ids, support=support) is None  # the warm-up
    det.start_epoch(1)
    masks = det.masks(anchor_ids, candidate_ids, support=support)
    assert masks.shape == (1, 2, 6)
    assert masks[0].tolist() == [[False, False, False, False, True, False],   # image 1 (z) is not near 0's views
                                 [False, False, False, False, False, False]]  # nothing near z but 1's own views
    # the threshold alone decides with no top-k limit; a top-1 limit keeps only the best other candidate
    # (image 1's second view scores 0.0995 with image 0's y view: above 0.05, and second best)
    for top_k, expected in ((0, [False, False, False, True, True, False]), (1, [False, False, False, False, True, False])):
        loose = _detector(fnc_top_k=top_k, fnc_threshold=0.05)
        loose.start_epoch(1)
        assert loose.masks(anchor_ids, candidate_ids, support=support)[0, 0].tolist() == expected
    with pytest.raises(ValueError, match="support views"):
        det.masks(anchor_ids, candidate_ids)


def test_each_simclr_anchor_row_gets_its_images_training_and_support_views():
    z1, z2 = torch.randn(2, 4), torch.randn(2, 4)
    support = torch.randn(2, 3, 1, 2, 2)  # [B, V, 3, S, S] with a "model" that flattens an image to D = 4
    views = support_embeddings(lambda x: x.flatten(1), support, z1, z2, torch.cat([z1, z2]))
    assert views.anchors.shape == (4, 5, 4) and views.candidates.shape == (4, 4)
    for row, image in ((0, 0), (1, 1), (2, 0), (3, 1)):  # view-1 rows, then view-2 rows
        assert torch.equal(views.anchors[row, 0], z1[image]) and torch.equal(views.anchors[row, 1], z2[image])
        assert torch.equal(views.anchors[row, 2:], support[image].flatten(1))


def test_bad_fnc_settings_are_config_errors():
    with pytest.raises(ConfigError, match="detection.fnc_support_views=0"):
        _detector(fnc_support_views=0)
    with pytest.raises(ConfigError, match="detection.fnc_top_k=0"):
        _detector(fnc_top_k=0, fnc_threshold=-1)


def test_support_views_follow_the_training_views_which_stay_those_without_support(tiny_cfg):
    cfg = tiny_cfg()
    train, _ = build_sources(cfg)
    transform = build_view_transform(cfg, SimCLRTransform)
    plain, support = IndexedViews(train, transform, seed=0), IndexedViews(train, transform, seed=0, support_views=3)
    (a1, a2), _, _ = plain[5]
    views, _, _ = support[5]
    assert len(views) == 5 and torch.equal(views[0], a1) and torch.equal(views[1], a2)
    assert all(not torch.equal(views[i], views[j]) for i in range(5) for j in range(i))
    assert all(torch.equal(a, b) for a, b in zip(support[5][0], views))  # seeded: the same again
    spec = ViewSpec(16, 0.2, 0.5, 0.8, 0.4, 0.4, 0.4, 0.1, 0.2, 0.5, (0.1, 2.0), 0.0, True)
    fast_plain, fast = FastViews(train, spec, seed=3), FastViews(train, spec, seed=3, support_views=2)
    (p1, p2), _, _, plain_params = fast_plain[5]
    crops, _, _, params = fast[5]
    assert len(crops) == 4 and params.shape == (4, NUM_PARAMS)
    assert torch.equal(crops[0], p1) and torch.equal(crops[1], p2) and torch.equal(params[:2], plain_params)


@pytest.mark.parametrize("augment_device", ["cpu", "cuda"])  # cuda: the fast path, its device side on the CPU here
def test_a_batch_moves_its_support_views_to_the_device_beside_unchanged_training_views(tiny_cfg, augment_device):
    cfg = tiny_cfg(augment={"device": augment_device})
    train, _ = build_sources(cfg)
    sampler = ResumableSampler(len(train), 8, seed=0)
    sampler.set_epoch(0)
    moved = []
    for support_views in (0, 2):
        views = build_train_views(cfg, train, torch.device("cpu"), SimCLRTransform, support_views)
        batch = next(iter(train_loader(views.dataset, sampler, 0, False)))
        moved.append((views.to_device(batch, torch.device("cpu")), views.support_to_device(batch, torch.device("cpu"))))
    (plain, no_support), (pair, support) = moved
    assert no_support is None and support.shape == (8, 2, 3, 16, 16)
    assert torch.equal(plain[0], pair[0]) and torch.equal(plain[1], pair[1])


def test_simclr_with_fnc_trains_and_reports_detection(tiny_cfg):
    cfg = tiny_cfg(train={"epochs": 1}, detection={"mode": "fnc", "warmup_epochs": 0, "fnc_threshold": 0.0})
    metrics = Engine(cfg, PretrainTask).fit()
    assert metrics["detection"] == "fnc" and 0.0 <= metrics["fn_precision"] <= 1.0
    assert 0.0 < metrics["fn_recall"] <= 1.0  # threshold 0: every anchor flags its top 10


def test_moco_scores_every_view_by_the_momentum_encoder_against_the_queue():
    class Momentum:
        def target(self, x: torch.Tensor) -> torch.Tensor:  # "momentum encoder": an image flattened to D = 4
            return x.flatten(1)

    k1, k2, queue = torch.randn(2, 4), torch.randn(2, 4), torch.randn(5, 4)
    support = torch.randn(2, 3, 1, 2, 2)
    views = momentum_support(Momentum(), support, k1, k2, queue)
    assert views.anchors.shape == (2, 5, 4) and views.candidates.shape == (6, 4)
    assert torch.equal(views.anchors[:, 0], k1) and torch.equal(views.anchors[:, 1], k2)
    assert torch.equal(views.anchors[1, 2:], support[1].flatten(1))
    assert torch.equal(views.candidates[0], torch.zeros(4)) and torch.equal(views.candidates[1:], queue)


def test_moco_with_fnc_trains_and_reports_detection(tiny_cfg):
    cfg = tiny_cfg(method="moco", train={"epochs": 1}, moco={"queue_size": 64},
                   detection={"mode": "fnc", "warmup_epochs": 0, "fnc_threshold": 0.0})
    metrics = Engine(cfg, PretrainTask).fit()
    assert metrics["detection"] == "fnc" and 0.0 <= metrics["fn_precision"] <= 1.0
    assert 0.0 < metrics["fn_recall"] <= 1.0  # threshold 0: every anchor flags its top 10 of the queue
