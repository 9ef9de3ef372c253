"""Bayesian false-negative elimination (FNE): statistics, weights and sampling.

Written from ``docs/fne.md``. The pieces work on similarities alone, so the same code
serves image-text fine-tuning (candidates: momentum batch plus memory) and MoCo
pretraining (candidates: the queue, positives: same dataset id):

1. :func:`select_reliable_pairs` picks, from an in-batch ``[B, B]`` similarity matrix,
   the pairs that are top-1 in both directions, with their hardest in-batch negatives
   (the original; :func:`select_all_pairs`: every pair, a variant, see :data:`STATS_PAIRS`);
2. :class:`SimilarityStats` keeps global statistics of those positive and negative
   similarities over an epoch, or over the whole run (no gradient);
3. :func:`false_negative_probability` applies Bayes' rule with a small prior;
4. :func:`sampling_weights` turns similarities into sampling weights (closeness kernel,
   false-negative down-weighting, cut-down of easy negatives and known positives);
5. :func:`sample_negatives` draws ``k`` negatives per anchor in proportion to the weights
   (a two-level inverse CDF; ``torch.multinomial`` for draws without replacement).

:class:`FNESampler` bundles them, with a hardest-negative (VSE++) warm-up.

Shapes: ``B`` anchors, ``N`` candidates, ``K`` negatives drawn per anchor.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ifnd.falseneg.triplet import hardest_negative_indices

STATS_METHODS = ("gaussian", "histogram")
STATS_PAIRS = ("reliable", "all")
"""Which in-batch pairs feed the statistics: ``reliable`` (mutually top-1, the original) or ``all``."""
STATS_RESETS = ("epoch", "never")
"""When the statistics are cleared: at every epoch's start (the original) or ``never`` (running over the run)."""
COSINE_BOUND = 1.05  # |similarity| of unit-norm embeddings, with room for low-precision rounding
_POS, _NEG = 0, 1  # rows of the statistics buffers


def _unbiased_var(count: int, total: Tensor, total_sq: Tensor) -> Tensor:
    """Unbiased variance from a count, a sum and a sum of squares (0 below 2 samples)."""
    if count < 2:
        return torch.zeros_like(total)
    return ((total_sq - total.square() / count) / (count - 1)).clamp(min=0)


def _bin_index(sims: Tensor, bins: int) -> Tensor:
    """Histogram bin over ``[-1, 1]`` of each similarity, same shape, long; outliers clamp to the edge bins."""
    return ((sims + 1) * (bins / 2)).floor().long().clamp(0, bins - 1)


class SimilarityStats(nn.Module):
    """Running statistics of positive and of negative similarities (global, shared by both directions).

    By default the exact within-epoch statistics: per class a count, a sum and a sum of
    squares, cleared by :meth:`reset` every epoch. With ``momentum`` the mean and the
    unbiased variance of each update's batch are blended in as an exponential moving
    average instead, ``stat = momentum * stat + (1 - momentum) * batch_stat`` (the first
    batch after a reset sets them). ``method="histogram"`` estimates the densities from
    ``bins`` equal bins over ``[-1, 1]`` (counts, or their moving average), with additive
    ``smoothing`` so that no density is ever zero; the Gaussian moments are kept too,
    since :func:`sampling_weights` cuts down below the positive mean.

    All state is in registered buffers (float64, ``count`` long): row 0 positives, row 1
    negatives. They follow ``.to(device)`` and ``state_dict``.

    Args:
        min_positives: positives needed since the last reset before :attr:`ready`.
        momentum: ``None`` for exact running sums, else the EMA keep-fraction in ``[0, 1)``.
        method: ``"gaussian"`` or ``"histogram"`` densities.
        bins: histogram bins over ``[-1, 1]`` (histogram only).
        smoothing: pseudo-count added to every bin (histogram only), > 0.
        min_var: floor of the Gaussian variances, > 0, so a degenerate class stays finite.
    """

    def __init__(
        self,
        min_positives: int = 200,
        momentum: float | None = None,
        method: str = "gaussian",
        bins: int = 50,
        smoothing: float = 1.0,
        min_var: float = 1e-6,
    ):
        super().__init__()
        if method not in STATS_METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {list(STATS_METHODS)}")
        if momentum is not None and not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1) or None, got {momentum}")
        if bins < 1 or smoothing <= 0 or min_var <= 0:
            raise ValueError(f"need bins >= 1, smoothing > 0, min_var > 0; got {bins}, {smoothing}, {min_var}")
        self.min_positives = min_positives
        self.momentum = momentum
        self.method = method
        self.bins = bins
        self.smoothing = smoothing
        self.min_var = min_var
        self.register_buffer("count", torch.zeros(2, dtype=torch.long))
        for name in self._moment_buffers:
            self.register_buffer(name, torch.zeros(2, dtype=torch.float64))
        if method == "histogram":
            self.register_buffer("hist", torch.zeros(2, bins, dtype=torch.float64))

    @property
    def _moment_buffers(self) -> tuple[str, str]:
        """Names of the first- and second-moment buffers of the current mode."""
        return ("total", "total_sq") if self.momentum is None else ("ema_mean", "ema_var")

    @torch.no_grad()
    def update(self, pos_sims: Tensor, neg_sims: Tensor) -> None:
        """Add a batch of positive and of negative similarities (detached; either may be empty).

        Args:
            pos_sims: ``[P]`` float, positive similarities.
            neg_sims: ``[Q]`` float, negative similarities.
        """
        for row, sims in ((_POS, pos_sims), (_NEG, neg_sims)):
            x = sims.detach().reshape(-1).to(self.count.device, torch.float64)
            n = x.numel()
            if n == 0:
                continue
            total, total_sq = x.sum(), x.square().sum()
            batch = (total, total_sq) if self.momentum is None else (total / n, _unbiased_var(n, total, total_sq))
            values = dict(zip(self._moment_buffers, batch))
            if self.method == "histogram":
                values["hist"] = torch.bincount(_bin_index(x, self.bins), minlength=self.bins).double()
            first = int(self.count[row]) == 0
            for name, value in values.items():
                buffer = getattr(self, name)[row]
                if self.momentum is None:
                    buffer += value
                else:
                    buffer.lerp_(value, 1.0 if first else 1.0 - self.momentum)
            self.count[row] += n

    def reset(self) -> None:
        """Forget everything (called at the start of every epoch)."""
        for buffer in self.buffers():
            buffer.zero_()

    @property
    def ready(self) -> bool:
        """Whether at least ``min_positives`` positives were seen since the last reset."""
        return int(self.count[_POS]) >= self.min_positives

    def _moments(self, row: int) -> tuple[float, float]:
        """``(mean, unbiased variance)`` of one class; ``(0, 0)`` before any sample."""
        if self.momentum is not None:
            return float(self.ema_mean[row]), float(self.ema_var[row])
        n = int(self.count[row])
        if n == 0:
            return 0.0, 0.0
        return float(self.total[row]) / n, float(_unbiased_var(n, self.total[row], self.total_sq[row]))

    @property
    def pos_mean(self) -> float:
        """Mean positive similarity."""
        return self._moments(_POS)[0]

    @property
    def pos_var(self) -> float:
        """Variance of the positive similarities."""
        return self._moments(_POS)[1]

    @property
    def neg_mean(self) -> float:
        """Mean negative similarity."""
        return self._moments(_NEG)[0]

    @property
    def neg_var(self) -> float:
        """Variance of the negative similarities."""
        return self._moments(_NEG)[1]

    def _log_density(self, sims: Tensor, row: int) -> Tensor:
        """Log density of one class at ``sims``, same shape and dtype."""
        if self.method == "histogram":
            hist = self.hist[row].to(sims.device)
            probs = (hist + self.smoothing) / (hist.sum() + self.bins * self.smoothing)
            log_density = (probs * (self.bins / 2)).log()  # bin width is 2 / bins
            return log_density[_bin_index(sims, self.bins)].to(sims.dtype)
        mean, var = self._moments(row)
        var = max(var, self.min_var)
        return -0.5 * (math.log(2 * math.pi * var) + (sims - mean).square() / var)

    def log_likelihoods(self, sims: Tensor) -> tuple[Tensor, Tensor]:
        """``(log p(s | positive), log p(s | negative))``, each the shape and dtype of ``sims``."""
        return self._log_density(sims, _POS), self._log_density(sims, _NEG)

    def log_odds(self, sims: Tensor, offset: float = 0.0) -> Tensor:
        """``log p(s | positive) - log p(s | negative) + offset``, the shape and dtype of ``sims``.

        Gaussian: a quadratic ``a s^2 + b s + c`` evaluated in place (a few passes over
        ``sims`` instead of two full log densities), the same values up to rounding.
        """
        if self.method == "histogram":
            log_pos, log_neg = self.log_likelihoods(sims)
            return log_pos.sub_(log_neg).add_(offset)
        a, b, c = self._log_odds_quadratic(offset)
        return torch.mul(sims, a).add_(b).mul_(sims).add_(c)

    def log_odds_above(self, sims: Tensor, limit: float, offset: float = 0.0, within: float = math.inf) -> Tensor:
        """``log_odds(sims, offset) > limit`` as a bool tensor the shape of ``sims``.

        Gaussian: the quadratic's roots are found once, so the test is one comparison per
        similarity (two passes when both roots lie inside ``|s| <= within``) instead of
        evaluating the quadratic; the same set up to rounding at the roots.
        """
        if self.method == "histogram" or math.isinf(limit):
            return self.log_odds(sims, offset) > limit
        return _quadratic_positive(sims, *self._log_odds_quadratic(offset - limit), within=within)

    def _log_odds_quadratic(self, offset: float) -> tuple[float, float, float]:
        """``(a, b, c)`` with ``log p(s | pos) - log p(s | neg) + offset = a s^2 + b s + c`` (Gaussian)."""
        (mean_p, var_p), (mean_n, var_n) = self._moments(_POS), self._moments(_NEG)
        var_p, var_n = max(var_p, self.min_var), max(var_n, self.min_var)
        a = 0.5 * (1 / var_n - 1 / var_p)
        b = mean_p / var_p - mean_n / var_n
        c = 0.5 * (mean_n**2 / var_n - mean_p**2 / var_p + math.log(var_n / var_p)) + offset
        return a, b, c

    def likelihoods(self, sims: Tensor) -> tuple[Tensor, Tensor]:
        """``(p(s | positive), p(s | negative))``, each the shape and dtype of ``sims``."""
        log_pos, log_neg = self.log_likelihoods(sims)
        return log_pos.exp(), log_neg.exp()


def _quadratic_positive(x: Tensor, a: float, b: float, c: float, within: float = math.inf) -> Tensor:
    """``a x^2 + b x + c > 0`` elementwise, from the roots: bool, the shape of ``x``.

    ``within``: a bound on ``|x|`` (cosine similarities: a little over 1); a root beyond it
    cannot separate any ``x``, so the test becomes one comparison (the usual case when the
    two Gaussians' variances are close and the quadratic nearly linear).
    """
    if a == 0:
        if b == 0:
            return torch.full_like(x, c > 0, dtype=torch.bool)
        return x > -c / b if b > 0 else x < -c / b
    disc = b * b - 4 * a * c
    if disc <= 0:  # one sign everywhere (0 at a double root)
        return torch.full_like(x, a > 0 and disc < 0, dtype=torch.bool)
    q = -0.5 * (b + math.copysign(math.sqrt(disc), b))  # the stable pair of roots q / a, c / q
    low, high = sorted((q / a, c / q))
    low_out, high_out = low < -within, high > within  # roots that no x reaches
    if low_out and high_out:
        return torch.full_like(x, a < 0, dtype=torch.bool)
    if low_out:
        return x > high if a > 0 else x < high
    if high_out:
        return x < low if a > 0 else x > low
    distance = torch.sub(x, 0.5 * (low + high)).abs_()  # from the middle of the roots: one comparison, not two
    return distance > 0.5 * (high - low) if a > 0 else distance < 0.5 * (high - low)


@torch.no_grad()
def select_reliable_pairs(sim: Tensor) -> tuple[Tensor, Tensor]:
    """Positive and hardest negative similarities of the pairs that are top-1 both ways.

    Args:
        sim: ``[B, B]`` float, in-batch image-text similarities; ``sim[i, i]`` is pair
            ``i``. Pair ``i`` is reliable when ``sim[i].argmax() == i`` and
            ``sim[:, i].argmax() == i``. With ``B < 2`` no pair has a negative and none
            is reliable.

    Returns:
        ``(pos_sims [P], neg_sims [2P])``, detached: ``sim[i, i]`` of each reliable pair,
        then the hardest off-diagonal entry of each reliable row followed by that of each
        reliable column.
    """
    return _select_pairs(sim, reliable_only=True)


@torch.no_grad()
def select_all_pairs(sim: Tensor) -> tuple[Tensor, Tensor]:
    """Positive and hardest negative similarities of every in-batch pair (a variant of
    :func:`select_reliable_pairs` for batches that hold few reliable pairs).

    Args:
        sim: ``[B, B]`` float, in-batch image-text similarities; ``sim[i, i]`` is pair ``i``.
            With ``B < 2`` no pair has a negative and none is returned.

    Returns:
        ``(pos_sims [B], neg_sims [2B])``, detached: the diagonal, then the hardest
        off-diagonal entry of each row followed by that of each column.
    """
    return _select_pairs(sim, reliable_only=False)


def _select_pairs(sim: Tensor, reliable_only: bool) -> tuple[Tensor, Tensor]:
    """The pairs of :func:`select_reliable_pairs` (``reliable_only``) or of :func:`select_all_pairs`."""
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"expected a square [B, B] matrix, got {tuple(sim.shape)}")
    sim = sim.detach()
    size = sim.shape[0]
    if size < 2:
        return sim.new_empty(0), sim.new_empty(0)
    diag = torch.arange(size, device=sim.device)
    keep = (sim.argmax(dim=1) == diag) & (sim.argmax(dim=0) == diag) if reliable_only else \
        torch.ones(size, dtype=torch.bool, device=sim.device)
    off_diag = sim.masked_fill(torch.eye(size, dtype=torch.bool, device=sim.device), float("-inf"))
    pos_sims = sim.diagonal()[keep]
    neg_sims = torch.cat([off_diag.amax(dim=1)[keep], off_diag.amax(dim=0)[keep]])
    return pos_sims, neg_sims


def false_negative_probability(sims: Tensor, stats: SimilarityStats, prior: float = 1e-4) -> Tensor:
    """Posterior probability that a candidate with similarity ``s`` is a positive.

    ``P_fn(s) = p(s|pos) pi / (p(s|pos) pi + p(s|neg) (1 - pi))``, computed as a sigmoid of
    the log-odds, so it stays finite where both densities underflow.

    Args:
        sims: float tensor of any shape, candidate similarities.
        stats: the positive/negative statistics.
        prior: prior probability ``pi`` of a candidate being a false negative, in ``(0, 1)``.

    Returns:
        Float tensor, the shape and dtype of ``sims``, values in ``[0, 1]``.
    """
    if not 0 < prior < 1:
        raise ValueError(f"prior must be in (0, 1), got {prior}")
    return stats.log_odds(sims, offset=math.log(prior) - math.log1p(-prior)).sigmoid_()


@torch.no_grad()
def sampling_weights(
    sims: Tensor,
    pos_sims: Tensor,
    positive_mask: Tensor,
    stats: SimilarityStats,
    tau: float = 0.5,
    prior: float = 1e-4,
    fn_threshold: float = 1e-3,
    cut_down: bool = True,
    cut_margin: float = 0.2,
) -> tuple[Tensor, Tensor]:
    """Unnormalised sampling weight of every candidate, and which ones passed the Bayes switch.

    As the original FNE code (``choice_negative``): ``w = exp(-tau (s - s_pos)^2)``; where
    ``P_fn > fn_threshold`` it becomes ``exp(-tau P_fn)`` (a likely false negative is
    down-weighted, not removed). With ``cut_down``, ``w = 0`` for easy negatives,
    ``s <= stats.pos_mean - cut_margin``, from the first call on: before any positive is
    seen the running mean is 0, as in the original. Known positives always get ``w = 0``.
    The switch acts only once ``stats.ready``.

    ``P_fn > fn_threshold`` is tested on the similarities (:meth:`SimilarityStats.log_odds_above`)
    and ``P_fn`` is computed only for the candidates that pass, usually a small share: the
    weights cost a few passes over ``[B, N]`` instead of a dozen.

    Args:
        sims: ``[B, N]`` float, anchor-candidate cosine similarities (``|s| <= COSINE_BOUND``).
        pos_sims: ``[B]`` float, each anchor's similarity to its own positive.
        positive_mask: ``[B, N]`` bool, known positives (e.g. same image id).
        stats: the positive/negative statistics.
        tau: kernel temperature (the original's 0.5).
        prior: false-negative prior, see :func:`false_negative_probability`.
        fn_threshold: ``P_fn`` above which the kernel is replaced (1.0: the Bayes step never acts).
        cut_down: zero the weights of easy negatives.
        cut_margin: how far below the positive mean a negative counts as easy.

    Returns:
        ``(weights [B, N] >= 0, switched [B, N] bool)``: detached, weights in the dtype of
        ``sims``; ``switched`` marks the candidates with ``P_fn > fn_threshold`` (none before
        ``stats.ready``).
    """
    sims = sims.detach()
    weights = torch.sub(sims, pos_sims.detach().unsqueeze(1)).square_().mul_(-tau).exp_()
    if stats.ready and fn_threshold < 1:
        prior_logit = math.log(prior) - math.log1p(-prior)
        limit = math.log(fn_threshold) - math.log1p(-fn_threshold) if fn_threshold > 0 else -math.inf
        switched = stats.log_odds_above(sims, limit, offset=prior_logit, within=COSINE_BOUND)
        flat = switched.view(-1).nonzero().squeeze(1)  # flat indices: cheaper than (row, column) pairs
        if len(flat):
            p_fn = false_negative_probability(sims.reshape(-1).index_select(0, flat), stats, prior)
            weights.view(-1).index_copy_(0, flat, p_fn.mul_(-tau).exp_())
    else:
        switched = torch.zeros_like(sims, dtype=torch.bool)
    zeroed = (sims <= stats.pos_mean - cut_margin).logical_or_(positive_mask) if cut_down else positive_mask
    return weights.masked_fill_(zeroed, 0.0), switched


@torch.no_grad()
def sample_negatives(
    sims: Tensor,
    weights: Tensor,
    positive_mask: Tensor,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw ``num_samples`` negatives per anchor in proportion to ``weights``.

    Known positives and zero-weight candidates are never drawn. A row with no positive
    weight left falls back to its highest-similarity non-positive candidate (drawn
    ``num_samples`` times). Draws are without replacement (``torch.multinomial``) when
    ``num_samples > 1`` and every row has at least ``num_samples`` drawable candidates,
    otherwise with replacement by a two-level inverse CDF (for ``num_samples = 1`` the
    same distribution as ``multinomial``, an order of magnitude faster on wide rows).

    Args:
        sims: ``[B, N]`` float, anchor-candidate similarities (for the fallback).
        weights: ``[B, N]`` float >= 0, unnormalised sampling weights.
        positive_mask: ``[B, N]`` bool, known positives.
        num_samples: ``K``, negatives per anchor.
        generator: random generator for reproducible draws.

    Returns:
        ``(indices [B, K] long, drawn_weights [B, K])``: the drawn columns and their
        weights (0 for the fallback draws).

    Raises:
        ValueError: if a fallback row has no non-positive candidate.
    """
    return _draw(sims, weights.detach().masked_fill(positive_mask, 0.0), positive_mask, num_samples, generator)


def _draw(sims: Tensor, weights: Tensor, positive_mask: Tensor, num_samples: int,
          generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """:func:`sample_negatives` for ``weights`` that are already 0 on the known positives."""
    if num_samples > 1 and int((weights > 0).sum(dim=1).min()) >= num_samples:
        indices = torch.multinomial(weights.float(), num_samples, replacement=False, generator=generator)
        return indices, weights.gather(1, indices)
    indices, fallback = _draw_with_replacement(weights, num_samples, generator)
    if bool(fallback.any()):
        hardest = hardest_negative_indices(sims[fallback], positive_mask[fallback])
        indices[fallback] = hardest.expand(-1, num_samples)
    return indices, weights.gather(1, indices)


_CHUNK = 128  # candidates per block of the two-level draw


def _draw_with_replacement(weights: Tensor, num_samples: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Inverse-CDF draws in two levels: a block of ``_CHUNK`` candidates, then a candidate in it.

    Block sums are a vectorised reduction, so the sequential cumulative sum runs over the
    block sums and over the one chosen block per draw only: a small fraction of a
    full-row ``cumsum`` (let alone ``multinomial``'s per-candidate random numbers).

    Args:
        weights: ``[B, N]`` float >= 0.
        num_samples: ``K``.
        generator: random generator.

    Returns:
        ``(indices [B, K] long, empty_rows [B] bool)``; the indices of empty rows (all
        weights 0) are meaningless.
    """
    rows, width = weights.shape
    full = width - width % _CHUNK
    block_sums = weights[:, :full].unflatten(1, (full // _CHUNK, _CHUNK)).sum(dim=2)
    if full < width:
        block_sums = torch.cat([block_sums, weights[:, full:].sum(dim=1, keepdim=True)], dim=1)
    block_cum = block_sums.cumsum(dim=1)  # [B, blocks]
    total = block_cum[:, -1:]
    targets = torch.rand(rows, num_samples, generator=generator, dtype=weights.dtype, device=weights.device)
    targets = _below(targets.mul_(total), total)
    block = torch.searchsorted(block_cum, targets, right=True).clamp_(max=block_cum.shape[1] - 1)  # [B, K]
    before = torch.where(block > 0, block_cum.gather(1, (block - 1).clamp(min=0)), 0.0)
    columns = block.unsqueeze(2) * _CHUNK + torch.arange(_CHUNK, device=weights.device)  # [B, K, CHUNK]
    inside = weights.gather(1, columns.flatten(1).clamp(max=width - 1)).view(rows, num_samples, _CHUNK)
    inside_cum = inside.masked_fill_(columns >= width, 0.0).cumsum(dim=2)
    # What is left of the target inside its block; recomputed sums may round differently.
    residual = _below((targets - before).clamp_(min=0).unsqueeze(2), inside_cum[:, :, -1:])
    offset = torch.searchsorted(inside_cum, residual, right=True).squeeze(2)
    return block * _CHUNK + offset, total.squeeze(1) <= 0


def _below(values: Tensor, limits: Tensor) -> Tensor:
    """``values`` capped strictly below ``limits`` (broadcast): ``r * total`` may round up to ``total``."""
    return torch.minimum(values, limits.nextafter(torch.zeros_like(limits)))


class SampledNegatives(NamedTuple):
    """Result of :class:`FNESampler` (unpacks as a 4-tuple)."""

    indices: Tensor
    """``[B, K]`` long, the chosen candidate columns."""
    drawn_weights: Tensor
    """``[B, K]`` float, their sampling weights."""
    weights: Tensor
    """``[B, N]`` float, the full weight matrix."""
    switched: Tensor
    """``[B, N]`` bool, the candidates past the Bayes switch (none while it is not used)."""


class FNESampler(nn.Module):
    """Negative sampler for both image-text fine-tuning and MoCo pretraining.

    During the first ``warmup_epochs`` epochs (0-based ``epoch < warmup_epochs``) it
    returns the ``K`` hardest non-positive candidates (VSE++ for ``K = 1``), with weight
    1 on them and 0 elsewhere and none past the switch; afterwards it draws with
    :func:`sampling_weights` and :func:`sample_negatives`. Its state (the statistics and
    the epoch) is in buffers, so it is saved with the model that owns it.

    Args:
        stats: statistics to use; default ``SimilarityStats()``.
        tau, prior, fn_threshold, cut_down, cut_margin: see :func:`sampling_weights`.
        warmup_epochs: epochs of hardest-negative training before sampling starts.
        stats_pairs: ``reliable`` (the original: mutually top-1 pairs, :func:`select_reliable_pairs`)
            or ``all`` (every pair, :func:`select_all_pairs`).
        stats_reset: ``epoch`` (the original: :meth:`start_epoch` clears the statistics) or
            ``never`` (they run over the whole run; :meth:`reset` still clears them).
    """

    def __init__(
        self,
        stats: SimilarityStats | None = None,
        tau: float = 0.5,
        prior: float = 1e-4,
        fn_threshold: float = 1e-3,
        cut_down: bool = True,
        cut_margin: float = 0.2,
        warmup_epochs: int = 1,
        stats_pairs: str = "reliable",
        stats_reset: str = "epoch",
    ):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        if stats_pairs not in STATS_PAIRS or stats_reset not in STATS_RESETS:
            raise ValueError(f"stats_pairs must be one of {STATS_PAIRS} and stats_reset one of {STATS_RESETS}; "
                             f"got {stats_pairs!r}, {stats_reset!r}")
        self.stats = stats if stats is not None else SimilarityStats()
        self.tau = tau
        self.prior = prior
        self.fn_threshold = fn_threshold
        self.cut_down = cut_down
        self.cut_margin = cut_margin
        self.warmup_epochs = warmup_epochs
        self.select_pairs = select_reliable_pairs if stats_pairs == "reliable" else select_all_pairs
        self.stats_reset = stats_reset
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_config(cls, cfg: Any) -> "FNESampler | None":
        """The sampler of ``cfg.negatives`` when ``negatives.sampler`` is ``fne``, else None."""
        neg = cfg.negatives
        if neg.sampler != "fne":
            return None
        return cls(SimilarityStats(min_positives=neg.min_positives), tau=neg.tau, prior=neg.prior,
                   fn_threshold=neg.fn_threshold, cut_down=neg.cut_down, cut_margin=neg.cut_margin,
                   warmup_epochs=neg.warmup_epochs, stats_pairs=neg.stats_pairs, stats_reset=neg.stats_reset)

    @property
    def in_warmup(self) -> bool:
        """Whether the current epoch still uses hardest negatives."""
        return int(self.epoch) < self.warmup_epochs

    def start_epoch(self, epoch: int) -> None:
        """Record the (0-based) epoch that begins and reset the statistics (unless ``stats_reset="never"``)."""
        self.epoch.fill_(epoch)
        if self.stats_reset == "epoch":
            self.reset()

    def reset(self) -> None:
        """Clear the statistics."""
        self.stats.reset()

    def update_stats(self, sim_matrix: Tensor) -> None:
        """Feed the pairs of an in-batch ``[B, B]`` similarity matrix (reliable ones, or all) to the statistics."""
        self.stats.update(*self.select_pairs(sim_matrix))

    @torch.no_grad()
    def weights(self, sims: Tensor, pos_sims: Tensor, positive_mask: Tensor) -> tuple[Tensor, Tensor]:
        """:func:`sampling_weights` with this sampler's statistics and settings.

        Args:
            sims: ``[B, N]`` anchor-candidate similarities; pos_sims: ``[B]``; positive_mask: ``[B, N]`` bool.

        Returns:
            ``(weights [B, N] >= 0, switched [B, N] bool)``, detached.
        """
        return sampling_weights(sims, pos_sims, positive_mask, self.stats, tau=self.tau, prior=self.prior,
                                fn_threshold=self.fn_threshold, cut_down=self.cut_down, cut_margin=self.cut_margin)

    def forward(
        self,
        sims: Tensor,
        pos_sims: Tensor,
        positive_mask: Tensor,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> SampledNegatives:
        """Choose ``num_samples`` negatives per anchor.

        Args:
            sims: ``[B, N]`` float, anchor-candidate similarities.
            pos_sims: ``[B]`` float, each anchor's own positive similarity.
            positive_mask: ``[B, N]`` bool, known positives.
            num_samples: ``K``.
            generator: random generator for reproducible draws.

        Returns:
            :class:`SampledNegatives` ``(indices [B, K], drawn_weights [B, K],
            weights [B, N], switched [B, N])``, all detached.
        """
        if self.in_warmup:
            indices = hardest_negative_indices(sims, positive_mask, k=num_samples)
            weights = torch.zeros_like(sims).scatter_(1, indices, 1.0)
            return SampledNegatives(indices, weights.gather(1, indices), weights, torch.zeros_like(positive_mask))
        weights, switched = self.weights(sims, pos_sims, positive_mask)
        indices, drawn = _draw(sims, weights, positive_mask, num_samples, generator)  # weights are masked already
        return SampledNegatives(indices, drawn, weights, switched)
