"""Tokenizer, vocabulary and the GRU sentence encoder."""

from __future__ import annotations

import pytest
import torch

from ifnd.itm.text import (
    PAD_ID,
    UNK_ID,
    GRUTextEncoder,
    Vocabulary,
    pad_tokens,
    tokenize,
)


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("A Man's dog, running; 2 cats!") == ["a", "man's", "dog", "running", "2", "cats"]


def test_vocabulary_min_count_order_unknown_and_round_trip():
    vocab = Vocabulary.build(["a cat", "a dog", "A cat sat"], min_count=2)
    assert vocab.words == ["<pad>", "<unk>", "a", "cat"]
    assert vocab.encode("a dog cat") == [2, UNK_ID, 3]
    assert vocab.encode("!!!") == [UNK_ID]
    assert Vocabulary.from_list(vocab.to_list()).index == vocab.index
    with pytest.raises(ValueError):
        Vocabulary(["a", "b"])


def test_pad_tokens():
    tokens, lengths = pad_tokens([[5, 6, 7], [8]])
    assert tokens.tolist() == [[5, 6, 7], [8, PAD_ID, PAD_ID]] and lengths.tolist() == [3, 1]


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_gru_encoder_is_normalised_and_ignores_padding(pooling):
    torch.manual_seed(0)
    encoder = GRUTextEncoder(vocab_size=20, word_dim=8, hidden_dim=6, embed_dim=5, pooling=pooling).eval()
    short = [4, 9, 3]
    tokens, lengths = pad_tokens([short, [1, 2, 3, 4, 5, 6, 7]])
    alone = encoder(*pad_tokens([short]))
    batched = encoder(tokens, lengths)
    assert batched.shape == (2, 5)
    torch.testing.assert_close(batched.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(batched[0], alone[0])  # the padding of a longer neighbour changes nothing


def test_gru_encoder_rejects_unknown_pooling():
    with pytest.raises(ValueError):
        GRUTextEncoder(10, 4, 4, 4, pooling="max")
