"""One image-text matching step: momentum update, embeddings, FNE statistics, loss, memory.

The FNE statistics are fed the in-batch block of the similarities
(:func:`~ifnd.itm.objective.in_batch_similarity`), before the negatives are chosen.

Under DDP each rank embeds its share of the global batch; the momentum embeddings and
image ids of all ranks are gathered, so the candidates, the statistics (the global
in-batch block) and the memory are the same as one process would have on the global
batch, and the memory is identical on every rank. The candidates start with this
rank's own pairs (:func:`~ifnd.runtime.distributed.local_first`), so anchor ``i``'s
positive stays in column ``i``. Gradients flow only through the local online anchors,
and DDP's gradient mean over ranks equals one process's mean over the global batch.

:class:`NegativeMining` holds everything about negatives (which selector, the FNE
sampler with its statistics and warm-up, the memory, the draw generator), so the
training loop and the step benchmark run exactly the same code.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from ifnd.config import ConfigError
from ifnd.falseneg.bayes import FNESampler
from ifnd.models.ring_buffer import IdRingBuffer
from ifnd.itm.model import ITMModel
from ifnd.itm.objective import (
    Candidates,
    all_negatives_selector,
    uniform_selector,
    NegativeSelector,
    TripletOutput,
    fne_selector,
    gather_candidates,
    hardest_selector,
    in_batch_similarity,
    itm_info_nce_loss,
    itm_triplet_loss,
    similarities,
)
from ifnd.runtime import distributed as dist


SAMPLERS = ("fne", "hardest", "vsepp", "vse0", "infonce", "random")
"""Negative choices of ``itm-train`` (``negatives.sampler``)."""

IN_BATCH = ("vsepp", "vse0", "infonce")
"""Samplers on the in-batch online x online layout (no momentum candidates, no memory)."""


class NegativeMining(nn.Module):
    """Negative choice of ``cfg.negatives``; its state (statistics, epoch, memory) is in buffers.

    Kinds (``negatives.sampler``):

    * ``fne``: Bayesian false-negative-aware draws among the momentum batch and the memory; during
      its warm-up, ``fne_warmup="vsepp"`` trains VSE++ on online x online (the original's warm-up:
      the memory is neither used nor filled), ``"hardest"`` the hardest momentum candidate of the batch.
    * ``hardest``: the hardest momentum candidate (batch and memory).
    * ``vsepp``: VSE++, the hardest in-batch negative, online x online, the pair itself as the only positive.
    * ``vse0``: the sum of the hinges over every in-batch negative (VSE0), same layout.
    * ``infonce``: symmetric InfoNCE over the in-batch pairs (CLIP's objective), same layout, at
      ``temperature``.
    * ``random``: a uniformly random momentum candidate (batch and memory): FNE without its weights.

    Args:
        kind: one of :data:`SAMPLERS`.
        sampler: the FNE sampler (statistics and warm-up); None unless ``kind == "fne"``.
        memory: the momentum memory, or None to use the batch only.
        num_samples: negatives per anchor and direction.
        margin: triplet margin.
        momentum: EMA momentum of the momentum encoders.
        fne_warmup: ``vsepp`` or ``hardest``, see above.
        stats_from: FNE statistics from the ``online`` x online in-batch similarities (the original) or
            ``momentum`` (online x momentum, as the loss sees the candidates).
        temperature: ``infonce``'s softmax temperature.

    The draw generator is set for every step by the caller (:attr:`generator`), from the
    run's seed and ``(epoch, step, rank)``, so a resumed run draws the same negatives.
    """

    def __init__(self, kind: str, sampler: FNESampler | None, memory: IdRingBuffer | None, num_samples: int = 1,
                 margin: float = 0.2, momentum: float = 0.995, fne_warmup: str = "vsepp", stats_from: str = "online",
                 temperature: float = 0.07):
        super().__init__()
        if kind not in SAMPLERS:
            raise ValueError(f"kind must be one of {SAMPLERS}, got {kind!r}")
        self.kind = kind
        self.sampler = sampler
        self.memory = memory
        self.num_samples = num_samples
        self.margin = margin
        self.momentum = momentum
        self.fne_warmup = fne_warmup
        self.stats_from = stats_from
        self.temperature = temperature
        self.generator = torch.Generator()
        self.draws: list = []  # this step's FNE draws with their positive masks (see fne_selector)

    @classmethod
    def from_config(cls, cfg: Any, world_size: int = 1) -> "NegativeMining":
        """``cfg.negatives``; the memory must hold the global batch of ``world_size`` ranks."""
        neg = cfg.negatives
        global_batch = cfg.train.batch_size * world_size
        if neg.sampler not in SAMPLERS:
            raise ConfigError(f"itm-train chooses negatives with negatives.sampler in {list(SAMPLERS)}, "
                              f"got {neg.sampler!r}")
        if neg.num_samples < 1:
            raise ConfigError("itm-train draws negatives: negatives.num_samples must be >= 1")
        use_memory = neg.use_memory and neg.sampler not in IN_BATCH
        if use_memory and neg.memory_size < global_batch:
            raise ConfigError(f"negatives.memory_size={neg.memory_size} must be >= the global batch "
                              f"(train.batch_size={cfg.train.batch_size} x {world_size} processes = {global_batch})")
        sampler = FNESampler.from_config(cfg)  # None unless fne
        memory = IdRingBuffer.pairs(neg.memory_size, cfg.model.embed_dim) if use_memory else None
        return cls(neg.sampler, sampler, memory, neg.num_samples, neg.margin, cfg.model.momentum, neg.fne_warmup,
                   neg.stats_from, neg.temperature)

    def start_epoch(self, epoch: int) -> None:
        """Set the sampler's epoch and reset its statistics (FNE)."""
        if self.sampler is not None:
            self.sampler.start_epoch(epoch)

    @property
    def fne_warming_up(self) -> bool:
        return self.kind == "fne" and self.sampler.in_warmup

    @property
    def in_batch(self) -> bool:
        """Whether this step uses the in-batch online x online layout (VSE++/VSE0, or FNE's original warm-up)."""
        return self.kind in IN_BATCH or (self.fne_warming_up and self.fne_warmup == "vsepp")

    @property
    def candidate_memory(self) -> IdRingBuffer | None:
        """The memory when it supplies candidates now (not during FNE's warm-up)."""
        return None if self.fne_warming_up else self.memory

    def selector(self) -> NegativeSelector:
        if self.kind == "vse0":
            return all_negatives_selector()
        if self.kind == "random":
            return uniform_selector(self.num_samples, self.generator)
        if self.kind == "fne" and not self.in_batch:
            return fne_selector(self.sampler, self.num_samples, self.generator, self.draws)
        return hardest_selector(self.num_samples)


def itm_step(model: ITMModel, mining: NegativeMining, images: Tensor, tokens: Tensor, lengths: Tensor,
             ids: Tensor, forward: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]] | None = None
             ) -> TripletOutput:
    """Loss of this rank's ``B`` pairs; afterwards the global batch's momentum embeddings are in the memory.

    Args:
        model: online and momentum encoders (the momentum ones are updated first).
        mining: negative choice, statistics and memory.
        images: ``[B, 3, S, S]`` images or ``[B, (R,) D]`` features.
        tokens: ``[B, L]`` caption token ids; lengths: ``[B]``.
        ids: ``[B]`` image ids.
        forward: the online forward (``model`` wrapped in DDP); default ``model`` itself.
    """
    model.momentum_update(mining.momentum)
    mining.draws.clear()
    image_emb, text_emb = (forward or model)(images, tokens, lengths)
    all_ids = dist.gather(ids)
    if mining.in_batch:  # candidates: the global batch's online embeddings, with gradient
        online = [dist.gather_with_grad(t) for t in (image_emb, text_emb)]
        if mining.kind == "fne":
            mining.sampler.update_stats((online[0] @ online[1].T).detach())
        candidates = Candidates(*(dist.local_first(t) for t in (*online, all_ids)))
        i2t, t2i = similarities(image_emb, text_emb, candidates)
        if mining.kind == "infonce":
            return itm_info_nce_loss(i2t, t2i, candidates.ids, mining.temperature)
        return itm_triplet_loss(i2t, t2i, candidates.ids, ids, mining.selector(), mining.margin, pair_positive=True)
    image_mom, text_mom = (dist.gather(t) for t in model.momentum_forward(images, tokens, lengths))
    if mining.kind == "fne":  # the global batch's statistics: the same on every rank
        image_all, text_all = (dist.gather(t.detach()) for t in (image_emb, text_emb))
        sims = image_all @ text_all.T if mining.stats_from == "online" else \
            in_batch_similarity(image_all, text_all, image_mom, text_mom)
        mining.sampler.update_stats(sims)
    candidates = gather_candidates(dist.local_first(image_mom), dist.local_first(text_mom), dist.local_first(all_ids),
                                   mining.candidate_memory)
    i2t, t2i = similarities(image_emb, text_emb, candidates)
    out = itm_triplet_loss(i2t, t2i, candidates.ids, ids, mining.selector(), mining.margin)
    if mining.memory is not None:
        mining.memory.enqueue(image_mom, text_mom, all_ids)
    return out
