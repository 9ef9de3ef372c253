"""IFND rounds: label tables from clustered embeddings, oracle, schedule, state."""

import pytest
import torch
import torch.nn.functional as F

from ifnd.config import ConfigError, resolve
from ifnd.falseneg.detectors import build_detector


def _cfg(seed=0, **detection):
    """The unguarded detector unless ``guard=True`` (the guard's own tests: tests/test_guard.py) and without the
    removal cap (3 blobs: a level removes a third of the negatives; the cap's own tests: tests/test_removal_cap.py)."""
    return resolve({"seed": seed, "train": {"epochs": 10},
                    "detection": {"warmup_epochs": 2, "cluster_every": 2, "kmeans_init": "kmeans++", "guard": False,
                                  "max_removed_share": 1.0, **detection}})


def _blobs(n_per=20, classes=3, dim=8, seed=0):
    """Well separated unit-norm clusters: features [classes*n_per, dim], labels."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=1) * 5
    labels = torch.arange(classes).repeat_interleave(n_per)
    feats = F.normalize(centres[labels] + 0.1 * torch.randn(len(labels), dim, generator=g), dim=1)
    return feats, labels


def test_round_schedule():
    det = build_detector(_cfg(mode="ifnd", num_clusters=[3]), 60, 8, None)
    assert [e for e in range(10) if det.wants_round(e)] == [2, 4, 6, 8]
    det.last_round = 4
    assert not det.wants_round(4) and det.wants_round(6)
    assert not build_detector(_cfg(mode="none"), 60, 8, None).wants_round(2)


def test_ifnd_round_recovers_clusters_and_accepts_a_growing_share():
    feats, labels = _blobs()
    det = build_detector(_cfg(mode="ifnd", num_clusters=[3, 6], accept_start=0.5, accept_end=1.0,
                              accept_schedule="linear"), 60, 8, labels)
    assert det.masks(torch.arange(4), torch.arange(60)) is None  # no round yet
    stats = det.run_round(2, feats)
    assert stats["accepted_share"] == pytest.approx(0.5)
    assert stats["level0/nmi"] == pytest.approx(1.0)
    assert stats["level0/pair_precision"] == pytest.approx(1.0)
    assert ((det.labels >= 0).sum(1) == 30).all()  # half of the 60 samples, each level
    stats = det.run_round(9, feats)
    assert stats["accepted_share"] == pytest.approx(1.0) and (det.labels >= 0).all()
    masks = det.masks(torch.tensor([0, 20]), torch.arange(60))
    assert masks.shape == (2, 2, 60)
    same_class = labels[None, :] == labels[torch.tensor([0, 20])][:, None]
    same_class[0, 0] = same_class[1, 20] = False  # never the anchor itself
    assert torch.equal(masks[0], same_class)


def test_bank_round_labels_only_samples_that_were_embedded():
    feats, labels = _blobs()
    det = build_detector(_cfg(mode="ifnd", features="bank", num_clusters=[3], accept_start=1.0), 60, 8, labels)
    with pytest.raises(RuntimeError, match="bank is empty"):
        det.run_round(2)
    seen = torch.arange(0, 60, 2)
    det.observe(seen, feats[seen])
    stats = det.run_round(2)
    assert (det.labels[0][seen] >= 0).all() and (det.labels[0][1::2] == -1).all()
    assert stats["level0/nmi"] == pytest.approx(1.0)


def test_oracle_uses_true_labels_under_the_same_schedule():
    _, labels = _blobs()
    det = build_detector(_cfg(mode="oracle", accept_start=0.25, accept_end=0.25, accept_schedule="constant"),
                         60, 8, labels)
    stats = det.run_round(2)
    accepted = det.labels[0] >= 0
    assert accepted.sum() == 15 and torch.equal(det.labels[0][accepted], labels[accepted])
    assert stats["level0/pair_precision"] == pytest.approx(1.0)
    assert accepted[45:].any()  # a seeded random subset, not the first 15 indices
    again = build_detector(_cfg(mode="oracle", accept_start=0.25, accept_end=0.25,
                                accept_schedule="constant"), 60, 8, labels)
    again.run_round(2)
    assert torch.equal(again.labels[0] >= 0, accepted)  # same seed, same subset
    other = build_detector(_cfg(mode="oracle", accept_start=0.25, accept_end=0.25,
                                accept_schedule="constant", seed=1), 60, 8, labels)
    other.run_round(2)
    assert not torch.equal(other.labels[0] >= 0, accepted)
    with pytest.raises(ConfigError, match="true labels"):
        build_detector(_cfg(mode="oracle"), 60, 8, None)


def test_state_round_trip_and_mismatch():
    feats, labels = _blobs()
    det = build_detector(_cfg(mode="ifnd", features="bank", num_clusters=[3]), 60, 8, labels)
    det.observe(torch.arange(60), feats)
    det.run_round(4)
    fresh = build_detector(_cfg(mode="ifnd", features="bank", num_clusters=[3]), 60, 8, labels)
    fresh.load_state_dict(det.state_dict())
    assert torch.equal(fresh.labels, det.labels) and fresh.last_round == 4 and fresh.share == det.share
    assert torch.equal(fresh.bank, det.bank) and torch.equal(fresh.bank_filled, det.bank_filled)
    assert not fresh.wants_round(5) and fresh.wants_round(6)
    other = build_detector(_cfg(mode="ifnd", features="bank", num_clusters=[3, 4]), 60, 8, labels)
    with pytest.raises(ValueError, match="num_clusters changed"):
        other.load_state_dict(det.state_dict())


def test_too_many_clusters_is_a_config_error():
    with pytest.raises(ConfigError, match="exceed"):
        build_detector(_cfg(mode="ifnd", num_clusters=[100]), 60, 8, None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_masks_follow_each_new_table():
    feats, labels = _blobs()
    det = build_detector(_cfg(mode="oracle"), 60, 8, labels)
    det.run_round(2)
    ids = torch.arange(60, device="cuda")
    first = det.masks(ids, ids)
    assert first.is_cuda and first.any()
    table = det.table_state()
    det.load_table({**table, "labels": torch.full_like(table["labels"], -1)})  # nothing accepted any more
    assert not det.masks(ids, ids).any()


def test_full_oracle_knows_every_label_from_the_first_step():
    _, labels = _blobs()
    det = build_detector(_cfg(mode="oracle", oracle="full"), 60, 8, labels)
    assert det.wants_round(0)  # no warm-up
    det.run_round(0)
    assert det.share == 1.0 and torch.equal(det.labels[0], labels)
    assert not det.wants_round(1) and not det.wants_round(5)  # the table never changes


def test_noisy_oracle_masks_reach_the_asked_pair_precision_and_recall():
    labels = torch.arange(600) % 10  # hand-made: 10 classes of 60
    ids = torch.arange(600)
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(600, dtype=torch.bool)
    for precision, recall in [(0.5, 0.6), (0.8, 0.8), (1.0, 0.4), (0.3, 1.0)]:
        det = build_detector(
            _cfg(mode="noisy_oracle", oracle="full", oracle_precision=precision, oracle_recall=recall), 600, 8, labels)
        det.run_round(0)
        mask = det.masks(ids, ids)[0]
        assert torch.equal(mask, mask.T) and not mask.diagonal().any()  # a pair is detected both ways, never itself
        hits = int((mask & same).sum())
        assert hits / int(mask.sum()) == pytest.approx(precision, abs=0.02)
        assert hits / int(same.sum()) == pytest.approx(recall, abs=0.02)
        a, b = (mask & ~same).nonzero().T  # false detections fall only on partner (confusable) classes
        assert bool(det.partners[labels[a], labels[b]].all()) and int(det.partners.sum()) < 90
    with pytest.raises(ConfigError, match="unreachable"):
        build_detector(_cfg(mode="noisy_oracle", oracle_precision=0.05, oracle_recall=1.0), 600, 8, labels)


def test_pair_uniform_is_symmetric_seeded_and_uniform():
    from ifnd.falseneg.masks import pair_uniform

    ids = torch.arange(300)
    u = pair_uniform(ids, ids, seed=0)
    assert torch.equal(u, u.T) and torch.equal(u, pair_uniform(ids, ids, seed=0))
    assert not torch.equal(u, pair_uniform(ids, ids, seed=1))
    assert 0 <= float(u.min()) and float(u.max()) < 1 and float(u.mean()) == pytest.approx(0.5, abs=0.01)
    assert torch.equal(pair_uniform(ids[:5], torch.tensor([7, -1]), 0)[:, 0], u[:5, 7])  # any subset, same numbers


def test_threshold_step_tracks_the_asked_quantile():
    from ifnd.falseneg.threshold import share_above, threshold_step

    sims = torch.linspace(-1, 1, 201).repeat(2, 1)  # two anchors, the same 201 candidates
    valid = torch.ones_like(sims, dtype=torch.bool)
    thresholds = torch.tensor([1.0, -1.0])
    for _ in range(2000):
        thresholds = threshold_step(thresholds, share_above(sims, thresholds, valid), quantile=0.1, lr=0.01)
    assert thresholds.tolist() == pytest.approx([0.8, 0.8], abs=0.02)  # 10% of the candidates lie above 0.8
    start = torch.tensor([0.005])
    one = threshold_step(start, share_above(sims[:1], start, valid[:1]), quantile=0.1, lr=0.5)
    assert one.item() == pytest.approx(0.005 + 0.5 * (100 / 201 - 0.1))  # by hand: 100 of 201 above 0.005


def test_threshold_detector_learns_from_the_first_step_and_detects_after_warm_up():
    det = build_detector(_cfg(mode="threshold", warmup_epochs=1, threshold_quantile=0.25,
                              threshold_lr=0.5), 4, 8, None)
    assert not det.wants_round(0) and det.needs_similarities and det.levels == 1
    ids = torch.tensor([0, 1])
    candidates = torch.tensor([0, 1, 2, 3, -1])
    sims = torch.tensor([[1.0, 0.9, 0.2, 0.1, 0.95], [0.9, 1.0, 0.8, 0.0, 0.99]])
    det.start_epoch(0)
    assert det.masks(ids, candidates, sims) is None  # warm-up: learning only
    # valid candidates exclude the anchor itself and the empty slot: 3 each; the first time, a threshold
    # starts at their 0.75 quantile (torch.quantile's interpolation), with no step, as GloFND's init_quantile:
    # [0.1, 0.2, 0.9] -> 0.2 + 0.5 * 0.7 = 0.55; [0.0, 0.8, 0.9] -> 0.85
    values = det.thresholds.values
    assert values[:2].tolist() == pytest.approx([0.55, 0.85]) and values[2:].isnan().all()  # unseen: unset
    det.start_epoch(1)
    mask = det.masks(ids, candidates, sims)[0]
    # first a step (1 of 3 above each: + 0.5 * (1/3 - 0.25)), then the mask with the new thresholds, as GloFND
    assert values[:2].tolist() == pytest.approx([0.55 + 0.5 / 12, 0.85 + 0.5 / 12])
    assert mask.tolist() == [[False, True, False, False, False], [True, False, False, False, False]]
    state = det.state_dict()
    fresh = build_detector(_cfg(mode="threshold", threshold_quantile=0.25, threshold_lr=0.5), 4, 8, None)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.thresholds.values[:2], det.thresholds.values[:2])


def test_row_quantile_by_hand():
    from ifnd.falseneg.threshold import row_quantile

    sims = torch.tensor([[0.1, 0.9, 0.5, 0.7, 0.3], [0.4, 0.2, 0.0, 0.0, 0.0]])
    valid = torch.tensor([[True] * 5, [True, True, False, False, False]])
    # the 0.6 quantile of the valid entries, interpolated as torch.quantile (GloFND's init_quantile)
    assert row_quantile(sims, valid, 0.4).tolist() == pytest.approx([0.5 + 0.4 * 0.2, 0.2 + 0.6 * 0.2])
    assert row_quantile(sims, valid, 0.4)[0] == pytest.approx(torch.quantile(sims[0], 0.6).item())
    assert row_quantile(sims, torch.zeros_like(valid), 0.4).isnan().all()  # no valid entry: unset
