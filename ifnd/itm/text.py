"""Captions to vectors: tokenizer, vocabulary and a bidirectional-GRU sentence encoder.

The vocabulary is built from the training captions only and stored in the checkpoint
(:meth:`Vocabulary.to_list` / :meth:`Vocabulary.from_list`), so evaluation encodes
captions exactly as training did.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens (letters and digits; punctuation dropped)."""
    return _WORD.findall(text.lower())


class Vocabulary:
    """Word <-> id map; id 0 is ``<pad>``, id 1 is ``<unk>``, then words by decreasing count."""

    def __init__(self, words: Sequence[str]):
        if list(words[:2]) != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {list(words[:2])}")
        self.words = list(words)
        self.index = {word: i for i, word in enumerate(self.words)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> "Vocabulary":
        """Words seen at least ``min_count`` times (ties in count broken alphabetically)."""
        counts = Counter(token for caption in captions for token in tokenize(caption))
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls([PAD, UNK, *kept])

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, caption: str) -> list[int]:
        """Token ids of a caption; unknown words -> ``<unk>``; an empty caption -> ``[<unk>]``."""
        return [self.index.get(token, UNK_ID) for token in tokenize(caption)] or [UNK_ID]

    def to_list(self) -> list[str]:
        """The words in id order (what the checkpoint stores)."""
        return list(self.words)

    @classmethod
    def from_list(cls, words: Sequence[str]) -> "Vocabulary":
        return cls(words)


def pad_tokens(sequences: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """Right-pad token id lists with ``<pad>``.

    Returns:
        ``(tokens [B, L] long, lengths [B] long)`` with ``L`` the longest length.
    """
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    tokens = torch.full((len(sequences), int(lengths.max())), PAD_ID, dtype=torch.long)
    for row, seq in enumerate(sequences):
        tokens[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return tokens, lengths


class GRUTextEncoder(nn.Module):
    """Word embeddings -> bidirectional GRU -> pooling -> linear projection -> L2 norm.

    Args:
        vocab_size: number of word ids.
        word_dim: word embedding width.
        hidden_dim: GRU width per direction.
        embed_dim: joint-space width.
        num_layers: stacked GRU layers.
        pooling: ``"mean"`` of the outputs over the real words, or ``"last"``: the final
            states of the forward and backward directions.
    """

    def __init__(self, vocab_size: int, word_dim: int, hidden_dim: int, embed_dim: int,
                 num_layers: int = 1, pooling: str = "mean"):
        super().__init__()
        if pooling not in ("mean", "last"):
            raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
        self.pooling = pooling
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=PAD_ID)
        self.gru = nn.GRU(word_dim, hidden_dim, num_layers=num_layers, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden_dim, embed_dim)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Token ids ``[B, L]`` and lengths ``[B]`` -> normalised embeddings ``[B, embed_dim]``."""
        packed = pack_padded_sequence(self.embed(tokens), lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, final = self.gru(packed)
        if self.pooling == "last":
            sentence = torch.cat([final[-2], final[-1]], dim=1)  # last layer, forward and backward
        else:
            padded, _ = pad_packed_sequence(outputs, batch_first=True)  # [B, L', 2H], zeros past each length
            sentence = padded.sum(dim=1) / lengths.to(padded).unsqueeze(1)
        return F.normalize(self.proj(sentence), dim=1)
