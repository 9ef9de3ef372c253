"""The removal cap: a level that would take too large a share of every anchor's negatives abstains.

A table of pseudo-labels removes, from each anchor's negatives, the other members of its accepted
cluster. Over the whole training set that is the share of ordered pairs the table flags,
``sum_c a_c (a_c - 1) / (N (N - 1))`` with ``a_c`` the accepted members of cluster c: the mean share
of an anchor's negatives the level removes. It needs no labels, only the table.

Why a cap and not a precision estimate: the share a level removes is exact without labels, where its
precision can only be estimated, and no label-free estimate ranked precision across settings. On the
studies every detector that picked its pairs from the embeddings and removed more than a fifth of the
negatives lost (silhouette-chosen k on the held-out settings, 0.24-0.33 of the negatives at k = 5:
-0.20 and -13.73 kNN points; the threshold detector on H1, 0.25-0.27: -1.29). It is a backstop, not
a guarantee: under the cap, levels near chance precision that removed up to 0.16-0.18 of the negatives
still lost 2.87 points on H2 (docs/results.md, "The removal cap").
"""

from __future__ import annotations

import torch

from ifnd.falseneg.reliability import ordered_pairs


def removed_share(labels: torch.Tensor) -> float:
    """The share of ordered pairs ``(i, j)``, ``i != j``, that share an accepted label.

    Args:
        labels: ``[N]`` long, accepted pseudo-label of each sample (-1: none; it removes nothing and
            loses nothing, but counts as an anchor).

    Returns:
        ``sum_c a_c (a_c - 1) / (N (N - 1))`` in [0, 1]; 0.0 when ``N < 2``.
    """
    if labels.dim() != 1:
        raise ValueError(f"labels must be [N], got shape {tuple(labels.shape)}")
    n = labels.numel()
    if n < 2:
        return 0.0
    return float(ordered_pairs(torch.bincount(labels[labels >= 0])).sum() / (n * (n - 1)))


def cap_levels(table: torch.Tensor, max_share: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Withdraw every level of ``table`` whose :func:`removed_share` exceeds ``max_share``.

    Args:
        table: ``[L, N]`` long, a round's accepted pseudo-labels per level (-1: none).
        max_share: the largest share of the ordered pairs a level may flag, in [0, 1]; 1.0 withdraws nothing.

    Returns:
        ``(capped [L, N], report)``: the table with the withdrawn levels set to -1, and
        ``level{l}/removed_share`` (before the cap), ``level{l}/cap_abstain`` (1.0 where withdrawn) and
        ``cap_abstain`` (1.0 when every level was withdrawn).
    """
    if not 0.0 <= max_share <= 1.0:
        raise ValueError(f"detection.max_removed_share must lie in [0, 1], got {max_share}")
    capped, report, withdrawn = table.clone(), {}, []
    for level in range(table.shape[0]):
        share = removed_share(table[level])
        withdrawn.append(share > max_share)
        if withdrawn[-1]:
            capped[level] = -1
        report[f"level{level}/removed_share"] = share
        report[f"level{level}/cap_abstain"] = float(withdrawn[-1])
    report["cap_abstain"] = float(all(withdrawn))
    return capped, report
