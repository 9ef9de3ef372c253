"""The fast view path (augment.device=cuda) on CPU tensors: crops, draft decoding, the device
side's parameters and operations, statistics against the CPU path, seeding and resume.
IFND_TEST_DEVICE=cuda runs the device side's tests on the GPU (tools/gpu_check.sh)."""

import math
import os

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from lightly.transforms import MoCoV2Transform, SimCLRTransform
from PIL import Image

from ifnd.config import ConfigError
from ifnd.data.build import build_sources, train_loader
from ifnd.data.device_augment import (
    BLUR, BRIGHTNESS, CONTRAST, FLIP, GRAY, HUE, JITTER, NUM_PARAMS, ORDER, SATURATION, SIGMA, SOLARIZE,
    DeviceAugment, ViewSpec, draw_params,
)
from ifnd.data.fast_views import (FastViews, build_train_views, crop_box, decode_jpeg, decode_rgb, draft_reduction,
                                  fast_path, jpeg_size)
from ifnd.data.sources import DataError, ImageFileDataset
from ifnd.pretrain.methods import method_class
from ifnd.pretrain.task import PretrainTask
from ifnd.runtime.checkpoint import load_checkpoint
from ifnd.runtime.loop import Engine, Interrupted
from ifnd.runtime.sampler import ResumableSampler

DEVICE = torch.device(os.environ.get("IFND_TEST_DEVICE", "cpu"))


def smooth_jpegs(folder, n: int, size=(120, 90), seed: int = 0) -> None:
    """``n`` photo-like JPEGs (smooth colour fields) in two class folders."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize(size, Image.BICUBIC)
        (folder / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        image.save(folder / f"c{i % 2}" / f"{i}.jpg", quality=90)


def test_crop_boxes_follow_random_resized_crop():
    rng = np.random.default_rng(0)
    boxes = np.array([crop_box(rng, 500, 375, 0.2) for _ in range(2000)])
    x, y, w, h = boxes.T
    assert (x >= 0).all() and (y >= 0).all() and (x + w <= 500).all() and (y + h <= 375).all()
    scale, ratio = w * h / (500 * 375), w / h
    assert scale.min() >= 0.19 and scale.max() <= 1.0 and 0.74 <= ratio.min() and ratio.max() <= 1.35
    assert crop_box(rng, 1000, 10, 0.99) == (493, 0, 13, 10)  # no draw fits: central crop at ratio 4/3


def test_draft_reduction_keeps_every_crop_at_the_output_size():
    assert draft_reduction([(0, 0, 300, 260), (5, 5, 500, 400)], 32) == 8
    assert draft_reduction([(0, 0, 300, 260), (5, 5, 100, 70)], 32) == 2
    assert draft_reduction([(0, 0, 60, 60), (5, 5, 100, 70)], 32) == 1


def test_decode_rgb_reduces_jpegs_by_the_draft_factor(tmp_path):
    Image.new("RGB", (401, 301), (10, 20, 30)).save(tmp_path / "a.jpg")
    Image.new("L", (40, 30), 7).save(tmp_path / "b.png")
    for reduction, shape in ((1, (301, 401)), (2, (151, 201)), (8, (38, 51))):
        with Image.open(tmp_path / "a.jpg") as image:
            pixels = decode_rgb(image, reduction)
        assert pixels.shape == (1, 3, *shape) and pixels.dtype == torch.uint8
    with Image.open(tmp_path / "b.png") as image:  # not a JPEG: full size, grayscale made RGB
        assert decode_rgb(image, 2).shape == (1, 3, 30, 40)


def test_decode_jpeg_equals_pils_decode_and_refuses_what_pil_must_take(tmp_path):
    smooth_jpegs(tmp_path, 1, size=(203, 150))
    path = tmp_path / "c0" / "0.jpg"
    Image.open(path).convert("L").save(tmp_path / "grey.jpg")
    for file in (path, tmp_path / "grey.jpg"):
        data = file.read_bytes()
        assert jpeg_size(data) == (203, 150)
        for reduction in (1, 2, 4, 8):
            with Image.open(file) as image:  # PIL's draft and convert
                assert torch.equal(decode_jpeg(data, 203, 150, reduction), decode_rgb(image, reduction, file))
    Image.new("CMYK", (40, 30), (0, 50, 100, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    assert jpeg_size((tmp_path / "cmyk.jpg").read_bytes()) is None  # PIL converts CMYK, as the CPU path does
    assert jpeg_size((tmp_path / "a.png").read_bytes()) is None and jpeg_size(b"") is None
    assert decode_jpeg(path.read_bytes()[:-400], 203, 150, 1) is None  # truncated: PIL decodes it or raises


def test_fast_views_of_files_pil_can_take_and_of_a_damaged_jpeg(tmp_path):
    smooth_jpegs(tmp_path, 2, size=(120, 90))
    Image.new("CMYK", (120, 90), (0, 50, 100, 0)).save(tmp_path / "c0" / "cmyk.jpg")
    Image.new("RGB", (120, 90), (1, 2, 3)).save(tmp_path / "c1" / "a.png")
    spec = ViewSpec(32, 0.2, 0.5, 0.8, 0.4, 0.4, 0.4, 0.1, 0.2, 0.5, (0.1, 2.0), 0.0, True)
    views = FastViews(ImageFileDataset.from_folder(str(tmp_path)), spec, seed=0)
    for i in range(len(views)):  # two JPEGs by simplejpeg, the CMYK JPEG and the PNG by PIL
        assert all(v.shape == (3, 32, 32) and v.dtype == torch.uint8 for v in views[i][0])
    cut = tmp_path / "c0" / "0.jpg"
    cut.write_bytes(cut.read_bytes()[:-600])
    damaged = FastViews(ImageFileDataset.from_folder(str(tmp_path), on_corrupt="error"), spec, seed=0)
    with pytest.raises(DataError, match="0.jpg"):
        [damaged[i] for i in range(len(damaged))]


def test_fast_views_cpu_side_shapes_seeding_and_draft(tmp_path):
    smooth_jpegs(tmp_path, 4, size=(400, 300))
    source = ImageFileDataset.from_folder(str(tmp_path))
    spec = ViewSpec(32, 0.2, 0.5, 0.8, 0.4, 0.4, 0.4, 0.1, 0.2, 0.5, (0.1, 2.0), 0.0, True)
    views = FastViews(source, spec, seed=3)
    (v1, v2), label, index, params = views[2]
    assert v1.shape == v2.shape == (3, 32, 32) and v1.dtype == torch.uint8 and index == 2 and label == 1  # c0/0, c0/2, c1/1, c1/3
    assert params.shape == (2, NUM_PARAMS) and params.dtype == torch.float32
    again = views[2]
    assert torch.equal(again[0][0], v1) and torch.equal(again[3], params)  # same (seed, epoch, index)
    views.set_epoch(1)
    assert not torch.equal(views[2][0][0], v1)
    # the reduced-size decode gives the crop of the full decode, up to resampling
    import ifnd.data.fast_views as fv
    drafted = views[1][0]
    saved, fv.DRAFT_REDUCTIONS = fv.DRAFT_REDUCTIONS, ()
    try:
        full = views[1][0]
    finally:
        fv.DRAFT_REDUCTIONS = saved
    for a, b in zip(drafted, full):
        assert (a.float() - b.float()).abs().mean() < 6  # of 255


def test_draw_params_ranges_and_frequencies():
    spec = ViewSpec(32, 0.2, 0.5, 0.8, 0.4, 0.3, 0.2, 0.1, 0.2, 0.5, (0.1, 2.0), 0.1, True)
    rng = np.random.default_rng(0)
    p = draw_params(rng, spec, 4000)
    for column, prob in ((FLIP, 0.5), (JITTER, 0.8), (GRAY, 0.2), (BLUR, 0.5), (SOLARIZE, 0.1)):
        assert set(np.unique(p[:, column])) <= {0.0, 1.0} and abs(p[:, column].mean() - prob) < 0.03, column
    for column, strength in ((BRIGHTNESS, 0.4), (CONTRAST, 0.3), (SATURATION, 0.2)):
        assert 1 - strength <= p[:, column].min() < 1 - 0.9 * strength and 1 + 0.9 * strength < p[:, column].max() <= 1 + strength
    assert -0.1 <= p[:, HUE].min() < -0.09 and 0.09 < p[:, HUE].max() <= 0.1
    assert 0.1 <= p[:, SIGMA].min() and p[:, SIGMA].max() <= 2.0
    assert (np.sort(p[:, ORDER], axis=1) == np.arange(4)).all()  # a permutation
    assert len({tuple(row) for row in p[:, ORDER]}) == 24  # every order occurs


def test_spec_takes_lightly_ranges_for_the_method(tiny_cfg):
    moco = ViewSpec.from_config(tiny_cfg(method="moco", augment={"cj_strength": 1.0}), MoCoV2Transform)
    simclr = ViewSpec.from_config(tiny_cfg(method="simclr", augment={"cj_strength": 0.5}), SimCLRTransform)
    assert (moco.brightness, moco.hue, moco.sigmas) == (0.4, 0.1, (0.1, 2))
    assert (simclr.brightness, simclr.saturation, simclr.hue) == (0.4, 0.4, 0.1)


def test_device_augment_matches_torchvision_per_sample():
    spec = ViewSpec(24, 0.2, 0.5, 0.8, 0.4, 0.4, 0.4, 0.1, 0.2, 0.0, (0.1, 2.0), 0.0, False)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 24, 24), dtype=torch.uint8, generator=g)
    rng = np.random.default_rng(1)
    params = torch.from_numpy(draw_params(rng, spec, 6))
    params[:, JITTER], params[:3, FLIP], params[3:, FLIP], params[:, GRAY] = 1, 1, 0, 0
    params[5, GRAY] = 1
    out = DeviceAugment(spec)(images.to(DEVICE), params.to(DEVICE))
    assert out.shape == images.shape and out.dtype == torch.float32 and out.device.type == DEVICE.type
    out = out.cpu()
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    columns = (BRIGHTNESS, CONTRAST, SATURATION, HUE)
    for i in range(6):
        x = images[i].float() / 255
        x = x.flip(-1) if params[i, FLIP] else x
        for op_id in params[i, ORDER].long().tolist():
            x = ops[op_id](x, float(params[i, columns[op_id]]))
        if params[i, GRAY]:
            x = TF.rgb_to_grayscale(x, 3)
        assert (out[i] - x).abs().max() < 0.01, i


def test_device_augment_blur_solarize_and_normalise():
    spec = ViewSpec(16, 0.2, 0.5, 0.0, 0.4, 0.4, 0.4, 0.1, 0.0, 1.0, (0.1, 2.0), 1.0, True)
    images = torch.full((2, 3, 16, 16), 200, dtype=torch.uint8)
    images[1, :, :, :8] = 0
    params = torch.zeros(2, NUM_PARAMS)
    params[:, BLUR], params[:, SIGMA], params[0, SOLARIZE] = 1, 2.0, 1
    out = DeviceAugment(spec)(images.to(DEVICE), params.to(DEVICE)).cpu()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    raw = out * std + mean
    assert torch.allclose(raw[0], torch.full_like(raw[0], 1 - 200 / 255), atol=1e-5)  # solarized, blur keeps flat
    edge = raw[1, 0, 8]
    assert 0 < edge[7] < edge[8] < 200 / 255  # the step is blurred
    with pytest.raises(ValueError, match="uint8"):
        DeviceAugment(spec)(images.float(), params)


def test_output_statistics_match_the_cpu_path(tmp_path, tiny_cfg):
    smooth_jpegs(tmp_path / "train", 32, size=(64, 48))
    cfg = tiny_cfg(method="moco", data={"name": "imagefolder", "root": str(tmp_path / "train"), "max_train_samples": 0},
                   augment={"cj_strength": 1.0, "blur_prob": 0.5, "device": "cpu"})
    source, _ = build_sources(cfg)
    cpu = build_train_views(cfg, source, torch.device("cpu"), method_class(cfg).transform)
    fast = build_train_views(resolve_with(cfg, "augment.device=cuda"), source, torch.device("cpu"),
                             method_class(cfg).transform)
    assert cpu.augment is None and fast.augment is not None
    stats = []
    for views in (cpu, fast):
        batches = [views.to_device(b, DEVICE) for epoch in range(4) for b in _loader(views, epoch, len(source))]
        x = torch.cat([torch.cat(pair) for pair in batches]).cpu()  # [4 * 2 * 32, 3, 16, 16]
        stats.append((x.mean((0, 2, 3)), x.std((0, 2, 3)), x.std((2, 3)).mean()))
    for a, b in zip(*stats):
        assert (a - b).abs().max() < 0.12, (a, b)


def resolve_with(cfg, *overrides):
    from ifnd.config import resolve

    return resolve(cfg.to_dict(), overrides)


def _loader(views, epoch, n, start_step=0, batch=16):
    sampler = ResumableSampler(n, batch, seed=0)
    sampler.set_epoch(epoch, start_step)
    views.dataset.set_epoch(epoch)
    return train_loader(views.dataset, sampler, 0, False)


def test_fast_path_is_seeded_and_resumes_mid_epoch(tmp_path, tiny_cfg):
    cfg = tiny_cfg(augment={"device": "cuda"})
    source, _ = build_sources(cfg)
    views = build_train_views(cfg, source, torch.device("cpu"), method_class(cfg).transform)
    full = [views.to_device(b, torch.device("cpu")) for b in _loader(views, 1, len(source))]
    resumed = [views.to_device(b, torch.device("cpu")) for b in _loader(views, 1, len(source), start_step=3)]
    assert len(resumed) == len(full) - 3
    for (a1, a2), (b1, b2) in zip(full[3:], resumed):
        assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(full[0][0], full[0][1])


def test_pretraining_on_the_fast_path_resumes_exactly(tmp_path, tiny_cfg):
    def cfg(name):
        return tiny_cfg(augment={"device": "cuda"}, output_dir=str(tmp_path / name), knn={"every": 0},
                        data={"max_train_samples": 64}, train={"epochs": 1, "batch_size": 16})

    Engine(cfg("ref"), PretrainTask).fit()
    with pytest.raises(Interrupted):
        Engine(cfg("cut"), PretrainTask, stop_at=(0, 2)).fit()
    Engine(cfg("cut"), PretrainTask, resume="auto").fit()
    a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt")["model"] for d in ("ref", "cut"))
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key


def test_augment_device_choice(tiny_cfg):
    assert fast_path("auto", torch.device("cuda")) and not fast_path("auto", torch.device("cpu"))
    assert fast_path("cuda", torch.device("cpu")) and not fast_path("cpu", torch.device("cuda"))
    cfg = tiny_cfg(augment={"device": "cpu", "solarize_prob": 0.2})
    with pytest.raises(ConfigError, match="augment.solarize_prob"):
        build_train_views(cfg, build_sources(cfg)[0], torch.device("cpu"), method_class(cfg).transform)
    assert math.isclose(tiny_cfg().augment.solarize_prob, 0.0)


def test_the_fast_path_handles_undecodable_and_16_bit_files_as_the_cpu_path(tmp_path):
    from ifnd.data.index import folder_source
    from ifnd.data.sources import DataError

    smooth_jpegs(tmp_path / "img", 6, size=(200, 150))
    bad = tmp_path / "img" / "c1" / "3.jpg"
    bad.write_bytes(bad.read_bytes()[:-200])  # header intact: only decoding fails
    deep = (np.arange(150 * 200, dtype=np.uint16).reshape(150, 200) * 2)  # 16-bit grey, up to 59,998
    Image.fromarray(deep).save(tmp_path / "img" / "c0" / "9.png")
    spec = ViewSpec(32, 0.9, 1.0, 0.0, 0.4, 0.4, 0.4, 0.1, 0.0, 0.0, (0.1, 2.0), 0.0, False)
    strict = FastViews(folder_source(str(tmp_path / "img"), str(tmp_path / "run"), "error"), spec)
    position = [str(p) for p, _ in strict.source.samples].index(str(bad))
    with pytest.raises(DataError, match=r"cannot decode image .*c1/3.jpg"):
        strict[position]
    lenient = FastViews(folder_source(str(tmp_path / "img"), str(tmp_path / "run2"), "skip", seed=1), spec)
    (v1, _), _, index, _ = lenient[position]
    assert index == position and v1.shape == (3, 32, 32)
    assert lenient.source.undecodable.nonzero().flatten().tolist() == [position]
    png = [str(p) for p, _ in lenient.source.samples].index(str(tmp_path / "img" / "c0" / "9.png"))
    (v1, _), _, _, _ = lenient[png]
    assert 0 < v1.float().mean() < 250  # scaled to 8 bits, not clipped white by convert("RGB")
