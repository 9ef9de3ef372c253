"""Triplet loss over chosen negatives, and one full training step with memory and FNE statistics."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from ifnd.config import ConfigError, resolve
from ifnd.falseneg.bayes import FNESampler, SimilarityStats
from ifnd.models.ring_buffer import IdRingBuffer
from ifnd.itm.model import Architecture, build_itm_model
from ifnd.itm.objective import (
    Candidates,
    directional_triplet,
    fne_selector,
    gather_candidates,
    hardest_selector,
    in_batch_similarity,
    itm_triplet_loss,
    similarities,
)
from ifnd.itm.schema import ITM_SCHEMA
from ifnd.itm.step import NegativeMining, itm_step

F64 = torch.float64
# Batch ids [0, 1] followed by memory ids [1, 0, 2].
IDS = torch.tensor([0, 1])
CANDIDATE_IDS = torch.tensor([0, 1, 1, 0, 2])
SIMS = torch.tensor([
    [0.8, 0.7, 0.9, 0.95, 0.3],  # id 0: positives at columns 0 and 3; hardest negative column 2 (0.9)
    [0.1, 0.6, 0.65, 0.5, 0.2],  # id 1: positives at columns 1 and 2; hardest negative column 3 (0.5)
], dtype=F64)


def test_gather_candidates_puts_the_batch_first_then_the_memory():
    memory = IdRingBuffer.pairs(4, 2)
    memory.enqueue(torch.ones(3, 2), 2 * torch.ones(3, 2), torch.tensor([1, 0, 2]))
    cands = gather_candidates(torch.zeros(2, 2), torch.zeros(2, 2), IDS, memory)
    assert cands.ids.tolist() == CANDIDATE_IDS.tolist()
    assert cands.images[:2].eq(0).all() and cands.images[2:].eq(1).all() and cands.texts[2:].eq(2).all()
    assert gather_candidates(torch.zeros(2, 2), torch.zeros(2, 2), IDS).ids.tolist() == [0, 1]


def test_hardest_negative_skips_every_candidate_with_the_anchor_image_id():
    loss, cols = directional_triplet(SIMS, IDS, CANDIDATE_IDS, hardest_selector(), margin=0.2)
    assert cols.tolist() == [[2], [3]]
    assert_close(loss, torch.tensor([0.2 + 0.9 - 0.8, 0.2 + 0.5 - 0.6], dtype=F64))


def test_fne_in_warmup_takes_the_same_path_as_hardest():
    sampler = FNESampler(warmup_epochs=1)
    out_fne = itm_triplet_loss(SIMS, SIMS.flip(0), CANDIDATE_IDS, IDS, fne_selector(sampler), 0.2)
    out_hard = itm_triplet_loss(SIMS, SIMS.flip(0), CANDIDATE_IDS, IDS, hardest_selector(), 0.2)
    assert_close(out_fne.loss, out_hard.loss)
    assert torch.equal(out_fne.i2t_negative_ids, out_hard.i2t_negative_ids)
    assert out_hard.i2t_negative_ids.tolist() == [[1], [0]]  # image ids of the chosen captions


def test_fne_draws_never_return_known_positives():
    stats = SimilarityStats(min_positives=1)
    stats.update(torch.tensor([0.7, 0.8]), torch.tensor([0.2, 0.3]))
    sampler = FNESampler(stats, warmup_epochs=0, cut_down=False)
    generator = torch.Generator().manual_seed(0)
    drawn = torch.cat([directional_triplet(SIMS, IDS, CANDIDATE_IDS, fne_selector(sampler, 1, generator), 0.2)[1]
                       for _ in range(50)], dim=1)
    assert set(drawn[0].tolist()) <= {1, 2, 4} and set(drawn[1].tolist()) <= {0, 3, 4}
    assert len(set(drawn[0].tolist())) > 1  # sampled, not always the hardest


def test_similarities_and_in_batch_block():
    images, texts = torch.eye(3)[:2], torch.eye(3)[[1, 0]]
    cands = Candidates(torch.eye(3), torch.eye(3)[[0, 2, 1]], torch.tensor([0, 1, 2]))
    i2t, t2i = similarities(images, texts, cands)
    assert i2t.tolist() == [[1, 0, 0], [0, 0, 1]] and t2i.tolist() == [[0, 1, 0], [1, 0, 0]]
    block = in_batch_similarity(images, texts, cands.images[:2], cands.texts[:2])
    assert block.tolist() == [[0.5, 0.5], [0.5, 0.0]]  # (i2t[:, :2] + t2i[:, :2].T) / 2


def _tiny(sampler: str, use_memory: bool = True, warmup: int = 1, **negatives):
    cfg = resolve({
        "seed": 0, "text": {"word_dim": 8, "hidden_dim": 8}, "model": {"embed_dim": 8},
        "train": {"batch_size": 4},
        "negatives": {"sampler": sampler, "use_memory": use_memory, "memory_size": 8, "warmup_epochs": warmup,
                      "min_positives": 1, **negatives},
    }, schema=ITM_SCHEMA)
    torch.manual_seed(0)
    model = build_itm_model(cfg, Architecture(vocab_size=12, backbone="small_cnn"))
    return model, NegativeMining.from_config(cfg)


def _batch(ids):
    torch.manual_seed(1)
    n = len(ids)
    return torch.rand(n, 3, 16, 16), torch.randint(2, 12, (n, 5)), torch.full((n,), 5), torch.tensor(ids)


def _vse_reference(images, texts, margin, reduce):
    """The original VSE++ / FNE-warm-up TripletLoss written out: in-batch online x online, identity mask."""
    scores = images @ texts.T
    diagonal = scores.diag().view(-1, 1)
    eye = torch.eye(len(scores), dtype=torch.bool)
    cost_s = (margin + scores - diagonal).clamp(min=0).masked_fill(eye, 0)      # image anchors, caption negatives
    cost_im = (margin + scores - diagonal.T).clamp(min=0).masked_fill(eye, 0)   # caption anchors, image negatives
    if reduce == "max":
        return (cost_s.max(1)[0].sum() + cost_im.max(0)[0].sum()) / len(scores)
    return (cost_s.sum() + cost_im.sum()) / len(scores)


def test_fne_warms_up_with_the_originals_vsepp_then_samples_from_the_memory():
    model, mining = _tiny("fne")
    mining.start_epoch(0)
    assert mining.in_batch and mining.candidate_memory is None  # warm-up: VSE++ online x online
    fed = []
    update_stats = mining.sampler.update_stats
    mining.sampler.update_stats = lambda sim: (fed.append(sim), update_stats(sim))
    batch = _batch([0, 1, 1, 3])  # image 1 twice: its other caption is a negative, as in the original's identity mask
    out = itm_step(model, mining, *batch)
    images, texts = model(*batch[:3])
    assert out.loss.item() == pytest.approx(_vse_reference(images, texts, 0.2, "max").item(), abs=1e-6)
    out.loss.backward()
    assert model.image_encoder.proj.weight.grad is not None and model.text_encoder.proj.weight.grad is not None
    assert model.image_encoder_momentum.proj.weight.grad is None
    assert len(mining.memory.contents()[2]) == 0  # the warm-up neither uses nor fills the memory
    assert len(fed) == 1 and torch.allclose(fed[0], (images @ texts.T).detach())  # statistics: online x online
    mining.sampler.stats.update(torch.ones(3), torch.zeros(3))

    mining.start_epoch(1)
    assert int(mining.sampler.stats.count.sum()) == 0  # reset every epoch
    assert not mining.in_batch and mining.candidate_memory is mining.memory
    ids = torch.tensor([0, 4, 4, 5])
    out = itm_step(model, mining, *_batch(ids.tolist()))
    assert not (out.i2t_negative_ids == ids.unsqueeze(1)).any()  # the momentum layout: same image id = positive
    assert not (out.t2i_negative_ids == ids.unsqueeze(1)).any()
    assert mining.memory.contents()[2].tolist() == [0, 4, 4, 5]


def test_fne_warmup_on_hardest_momentum_candidates_fills_the_memory():
    model, mining = _tiny("fne", fne_warmup="hardest", stats_from="momentum")
    mining.start_epoch(0)
    assert not mining.in_batch and mining.candidate_memory is None
    itm_step(model, mining, *_batch([0, 1, 2, 3]))
    assert sorted(mining.memory.contents()[2].tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("sampler, reduce", [("vsepp", "max"), ("vse0", "sum")])
def test_vsepp_and_vse0_are_the_in_batch_online_losses(sampler, reduce):
    model, mining = _tiny(sampler)
    assert mining.memory is None and mining.in_batch  # no memory for in-batch losses
    batch = _batch([0, 1, 1, 3])
    out = itm_step(model, mining, *batch)
    images, texts = model(*batch[:3])
    assert out.loss.item() == pytest.approx(_vse_reference(images, texts, 0.2, reduce).item(), abs=1e-6)


def test_infonce_is_the_symmetric_in_batch_cross_entropy():
    model, mining = _tiny("infonce", temperature=0.1)
    assert mining.memory is None and mining.in_batch
    batch = _batch([0, 1, 2, 3])
    out = itm_step(model, mining, *batch)
    images, texts = model(*batch[:3])
    logits = images @ texts.T / 0.1
    log_p_i2t = logits.diag() - logits.logsumexp(dim=1)   # each image picks its caption among the batch's
    log_p_t2i = logits.diag() - logits.logsumexp(dim=0)   # each caption picks its image
    reference = -(log_p_i2t.sum() + log_p_t2i.sum()) / 4
    assert out.loss.item() == pytest.approx(reference.item(), abs=1e-5)
    hardest = (logits - torch.eye(4) * 1e9).argmax(dim=1)  # reported negative: the most similar non-pair caption
    assert out.i2t_negative_ids.squeeze(1).tolist() == hardest.tolist()


def test_random_sampler_draws_uniformly_among_non_positive_memory_candidates():
    model, mining = _tiny("random", memory_size=64)
    mining.start_epoch(0)
    mining.generator = torch.Generator().manual_seed(0)
    drawn = []
    for step in range(12):
        ids = torch.tensor([step % 3, 3, 4, 5])
        out = itm_step(model, mining, *_batch(ids.tolist()))
        assert not (out.i2t_negative_ids == ids.unsqueeze(1)).any()
        drawn += out.i2t_negative_ids.flatten().tolist()
    assert len(set(drawn)) >= 5  # spread over the candidates, not always the hardest


def test_hardest_step_uses_no_statistics_and_batch_only_without_memory():
    model, mining = _tiny("hardest", use_memory=False)
    mining.start_epoch(0)
    out = itm_step(model, mining, *_batch([0, 1, 1, 2]))
    assert mining.memory is None and mining.sampler is None  # no statistics to feed
    ids = torch.tensor([0, 1, 1, 2])
    assert not (out.t2i_negative_ids == ids.unsqueeze(1)).any()  # the duplicate image 1 is never a negative


def test_same_seed_and_epoch_give_the_same_draws():
    losses = []
    for _ in range(2):
        model, mining = _tiny("fne", warmup=0)
        mining.start_epoch(3)
        losses.append(itm_step(model, mining, *_batch([0, 1, 2, 3])).loss.item())
    assert losses[0] == losses[1]


def test_memory_smaller_than_a_batch_is_refused():
    cfg = resolve({"train": {"batch_size": 16}, "negatives": {"sampler": "fne", "memory_size": 8}}, schema=ITM_SCHEMA)
    with pytest.raises(ConfigError, match="memory_size"):
        NegativeMining.from_config(cfg)
