"""Image-caption layouts: built-in demo, Karpathy JSON, precomputed features; datasets and collation."""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from ifnd.data.sources import DataError
from ifnd.itm.data import (
    CaptionDataset,
    PairDataset,
    collate_captions,
    collate_pairs,
    features_to_tensor,
    find_annotations,
    load_demo,
    load_features,
    load_karpathy,
    load_split,
)
from ifnd.itm.demo_captions import (
    DIGIT_NAMES,
    attribute_edges,
    caption_digits,
    caption_matches,
    digit_attributes,
    image_facts,
)
from ifnd.itm.text import Vocabulary


@pytest.fixture(scope="module")
def demo_test():
    return load_demo("test", 16)


def test_demo_has_five_varied_captions_per_image_naming_the_digit(demo_test):
    assert demo_test.num_images == 200 and len(demo_test.captions) == 1000
    assert np.bincount(demo_test.caption_image).tolist() == [5] * 200
    for caption, image in zip(demo_test.captions, demo_test.caption_image):
        label = int(demo_test.labels[image])
        assert DIGIT_NAMES[label] in caption.split() or str(label) in caption.replace(",", "").split()
    assert len(set(demo_test.captions[:5])) == 5  # varied wording per image


def test_demo_false_negatives_are_semantic_not_verbatim(demo_test):
    counts = Counter(demo_test.captions)
    duplicated = sum(n for n in counts.values() if n > 1) / len(demo_test.captions)
    assert duplicated < 0.1  # verbatim copies are rare ...
    matches = demo_test.matches
    assert matches.shape == (1000, 200) and matches[np.arange(1000), demo_test.caption_image].all()  # own image fits
    assert (matches.sum(1) > 1).mean() > 0.5  # ... but most captions fit other images too
    same_digit = demo_test.labels[None, :] == demo_test.labels[demo_test.caption_image][:, None]
    assert not (matches & ~same_digit).any()  # a caption never fits another digit


def test_caption_matches_by_hand():
    # digit 3, ink bin 2, slant bin 0; the caption names the digit and the ink only
    facts = np.array([[3, 2, 0, 1, 1, 1, 1], [3, 2, 1, 0, 0, 0, 0], [3, 0, 0, 1, 1, 1, 1], [4, 2, 0, 1, 1, 1, 1]])
    said = np.array([[3, 2, -1, -1, -1, -1, -1]])
    assert caption_matches(said, facts).tolist() == [[True, True, False, False]]


def test_demo_is_deterministic_and_splits_are_disjoint(demo_test):
    again = load_demo("test", 16)
    assert again.captions == demo_test.captions
    val = load_demo("val", 16)
    assert val.num_images == 160
    assert not np.array_equal(np.stack([np.asarray(val.images[i]) for i in range(3)]),
                              np.stack([np.asarray(demo_test.images[i]) for i in range(3)]))
    with pytest.raises(DataError):
        load_demo("restval", 16)


def test_attributes_follow_the_pixels():
    img = np.zeros((3, 8, 8), dtype=np.uint8)
    img[0, :, 3:5] = 255  # upright bar
    img[1, :, 1:7] = 255  # wide, more ink
    for row in range(8):  # bar leaning right: further right going up
        img[2, row, 7 - row] = 255
    attrs = digit_attributes(img)
    assert attrs["ink"][1] > attrs["ink"][0]
    assert attrs["width"][1] > attrs["width"][0]
    assert attrs["slant"][2] > 0.5 and abs(attrs["slant"][0]) < 1e-6
    facts = image_facts(img, np.array([1, 1, 7]), attribute_edges(img))
    captions, caption_image, said = caption_digits(facts, seed=0)
    assert caption_image.tolist() == [0] * 5 + [1] * 5 + [2] * 5 and len(captions) == 15
    assert caption_matches(said, facts)[np.arange(15), caption_image].all()


def test_head_keeps_exactly_the_captions_of_the_first_images(demo_test):
    head = demo_test.head(4)
    assert head.num_images == 4 and len(head.captions) == 20 and head.matches.shape == (20, 4)
    assert head.captions == demo_test.captions[:20] and head.caption_image.max() == 3
    with pytest.raises(IndexError):
        head.images[4]


def test_pair_items_carry_the_image_id_and_collate_pads(demo_test):
    vocab = Vocabulary.build(demo_test.captions)
    pairs = PairDataset(demo_test, lambda img: torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float(), vocab)
    items = [pairs[i] for i in (0, 7, 12)]
    assert [item[2] for item in items] == [0, 1, 2]
    images, tokens, lengths, ids = collate_pairs(items)
    assert images.shape == (3, 3, 16, 16) and ids.tolist() == [0, 1, 2]
    assert tokens.shape == (3, int(lengths.max()))
    for row, length in enumerate(lengths.tolist()):
        assert (tokens[row, :length] > 1).all() and (tokens[row, length:] == 0).all()  # known words, then <pad>
    tokens, lengths, index = collate_captions([CaptionDataset(demo_test, vocab)[i] for i in (3, 4)])
    assert index.tolist() == [3, 4] and tokens.shape[0] == 2


# --- Karpathy JSON ------------------------------------------------------------------


def _karpathy(tmp_path, extra_sentences: int = 1):
    (tmp_path / "imgs" / "val2014").mkdir(parents=True)
    entries = []
    for i, split in enumerate(["train", "restval", "test", "test"]):
        Image.new("RGB", (6, 6), color=(40 * i, 0, 0)).save(tmp_path / "imgs" / "val2014" / f"im{i}.jpg")
        sentences = [{"raw": f"Picture {i}, caption {j}.", "tokens": []} for j in range(5 + extra_sentences * (i == 3))]
        entries.append({"filepath": "val2014", "filename": f"im{i}.jpg", "split": split, "sentences": sentences})
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": entries, "dataset": "coco"}))
    return path


def test_karpathy_maps_captions_explicitly_including_six_caption_images(tmp_path):
    path = _karpathy(tmp_path)
    test = load_karpathy(path, str(tmp_path / "imgs"), ["test"])
    assert test.num_images == 2 and len(test.captions) == 11
    assert test.caption_image.tolist() == [0] * 5 + [1] * 6
    assert test.captions[5] == "Picture 3, caption 0."
    assert test.images[1].size == (6, 6) and test.images[1].getpixel((0, 0))[0] == 120
    train = load_karpathy(path, str(tmp_path / "imgs"), ["train", "restval"])
    assert train.num_images == 2 and train.captions[5].startswith("Picture 1")


def test_karpathy_errors_are_clear(tmp_path):
    path = _karpathy(tmp_path)
    with pytest.raises(DataError, match="not found"):
        find_annotations("", str(tmp_path / "missing.json"))
    assert find_annotations(str(tmp_path), "") == path
    with pytest.raises(DataError, match="dataset_"):
        find_annotations(str(tmp_path / "imgs"), "")
    with pytest.raises(DataError, match="does not exist"):
        load_karpathy(path, str(tmp_path / "nope"), ["test"])
    with pytest.raises(DataError, match="it has"):
        load_karpathy(path, str(tmp_path / "imgs"), ["dev"])
    (tmp_path / "imgs" / "val2014" / "im2.jpg").unlink()
    with pytest.raises(DataError, match="im2.jpg"):
        load_karpathy(path, str(tmp_path / "imgs"), ["test"])


def test_load_split_reads_karpathy_from_config(tmp_path):
    _karpathy(tmp_path)
    cfg = SimpleNamespace(data=SimpleNamespace(name="karpathy", root=str(tmp_path / "imgs"), annotations=str(tmp_path / "dataset_coco.json")))
    assert load_split(cfg, ["train", "restval"]).num_images == 2


# --- precomputed features -------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 4), (3, 2, 4)])
def test_features_layout_global_and_region(tmp_path, shape):
    feats = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    np.save(tmp_path / "dev_ims.npy", feats)
    (tmp_path / "dev_caps.txt").write_text("\n".join(f"caption {i}" for i in range(15)) + "\n")
    split = load_features(str(tmp_path), "dev", 5)
    assert split.num_images == 3 and split.caption_image.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert torch.equal(features_to_tensor(split.images[2]), torch.from_numpy(feats[2]))


def _scan_split(root, split, num_images, rows_per_caption=False):
    """SCAN's layout at its real feature shape [N, 36, 2048] (few images), 5 UTF-8 caption lines each."""
    rng = np.random.default_rng(len(split))
    feats = rng.normal(size=(num_images, 36, 2048)).astype(np.float32)
    if rows_per_caption:
        feats = np.repeat(feats, 5, axis=0)
    np.save(root / f"{split}_ims.npy", feats)
    captions = [f"un café près de l'image {i} — caption {j}" for i in range(num_images) for j in range(5)]
    (root / f"{split}_caps.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
    return feats


def test_scan_layout_loads_with_the_defaults_a_user_expects(tmp_path):
    from ifnd.config import resolve
    from ifnd.itm.data import load_split, validation_split
    from ifnd.itm.schema import ITM_SCHEMA

    feats = {split: _scan_split(tmp_path, split, n) for split, n in (("train", 4), ("dev", 2), ("test", 2), ("testall", 3))}
    cfg = resolve({"data": {"name": "features", "root": str(tmp_path)}}, schema=ITM_SCHEMA)
    assert validation_split(cfg) == "dev"  # auto: SCAN calls the validation split dev
    dev = load_split(cfg, validation_split(cfg))
    assert dev.num_images == 2 and len(dev.captions) == 10 and dev.captions[0].startswith("un café")
    testall = load_split(cfg, "testall")
    assert testall.caption_image.tolist() == np.repeat(np.arange(3), 5).tolist()
    assert torch.equal(features_to_tensor(testall.images[1]), torch.from_numpy(feats["testall"][1]))
    demo = resolve({}, schema=ITM_SCHEMA)
    assert validation_split(demo) == "val"


def test_scan_older_layout_with_one_image_row_per_caption(tmp_path):
    feats = _scan_split(tmp_path, "dev", 3, rows_per_caption=True)
    split = load_features(str(tmp_path), "dev", 5)
    assert split.num_images == 3 and split.caption_image.tolist() == np.repeat(np.arange(3), 5).tolist()
    assert torch.equal(features_to_tensor(split.images[2]), torch.from_numpy(feats[10]))
    np.save(tmp_path / "dev_ims.npy", np.arange(15 * 4, dtype=np.float32).reshape(15, 4))  # rows do not repeat
    with pytest.raises(DataError, match="do not repeat"):
        load_features(str(tmp_path), "dev", 5)
    (tmp_path / "dev_caps.txt").write_bytes(b"\xff\xfe bad\n" * 15)
    with pytest.raises(DataError, match="UTF-8"):
        load_features(str(tmp_path), "dev", 5)


def test_features_errors_are_clear(tmp_path):
    with pytest.raises(DataError, match="dev_ims.npy"):
        load_features(str(tmp_path), "dev", 5)
    np.save(tmp_path / "dev_ims.npy", np.zeros((3, 4), dtype=np.float32))
    (tmp_path / "dev_caps.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match="captions_per_image"):
        load_features(str(tmp_path), "dev", 5)
    np.save(tmp_path / "dev_ims.npy", np.zeros(3, dtype=np.float32))
    (tmp_path / "dev_caps.txt").write_text("a\nb\nc\n")
    with pytest.raises(DataError, match="N_img"):
        load_features(str(tmp_path), "dev", 1)


# --- the false-negative density knob ------------------------------------------------------


def test_caption_density_by_hand():
    from ifnd.itm.data import ItmSplit, caption_density

    # 3 images, 4 captions; caption 0 (image 0) also fits image 1; caption 3 (image 2) fits every image
    matches = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0], [1, 1, 1]], dtype=bool)
    split = ItmSplit([None] * 3, ["a", "b", "c", "d"], np.array([0, 0, 1, 2]), matches=matches)
    density = caption_density(split)
    assert density["images_per_caption"] == pytest.approx(7 / 4)
    assert density["fn_share_t2i"] == pytest.approx((1 + 0 + 0 + 2) / 4 / 2)  # other images fitting, of 2 candidates
    # image 0: caption 3 of its 2 others' captions; image 1: captions 0, 3 of 3; image 2: none of 3
    assert density["fn_share_i2t"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert caption_density(ItmSplit([None], ["a"], np.array([0]))) == {}


def test_density_knob_moves_the_measured_density(demo_test):
    from ifnd.itm.data import caption_density

    settings = [((0, 0), 3), ((1, 3), 3), ((6, 6), 3), ((6, 6), 6)]  # from the digit only to every attribute, finely
    densities = [caption_density(load_demo("test", 16, attributes, bins)) for attributes, bins in settings]
    assert densities[1] == caption_density(demo_test)  # the defaults are the original demo
    for key in ("images_per_caption", "fn_share_t2i", "fn_share_i2t"):
        values = [d[key] for d in densities]
        assert values == sorted(values, reverse=True) and values[0] > values[-1], (key, values)
    assert densities[0]["images_per_caption"] == pytest.approx(20, abs=3)  # 200 test images, 10 digits
    assert densities[-1]["images_per_caption"] < 1.5
    fine = load_demo("test", 16, (6, 6), 6)
    assert fine.matches[np.arange(len(fine.captions)), fine.caption_image].all()  # a caption always fits its image
    assert all(caption.count("grade") == 6 and " of 6" in caption for caption in fine.captions[:5])


def test_density_keys_are_validated(demo_test):
    cfg = SimpleNamespace(data=SimpleNamespace(name="demo", image_size=16, caption_attributes=[3, 1], caption_bins=3))
    with pytest.raises(DataError, match="data.caption_attributes"):
        load_split(cfg, "test")
    cfg.data.caption_attributes, cfg.data.caption_bins = [1, 3], 1
    with pytest.raises(DataError, match="data.caption_bins"):
        load_split(cfg, "test")
    cfg.data.caption_bins = 3
    assert load_split(cfg, "test").captions == demo_test.captions
