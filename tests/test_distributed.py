"""torchrun with 2 CPU processes (gloo) against 1 process on the same global batch."""

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ifnd.runtime.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]

COMMON = [
    "device=cpu", "data.name=digits", "data.image_size=16", "data.num_workers=0", "data.max_train_samples=128",
    "model.backbone=small_cnn", "model.proj_hidden_dim=32", "model.proj_dim=16", "model.norm=group",
    "moco.queue_size=64", "train.epochs=3", "train.lr=0.3", "knn.every=0", "knn.k=10",
    "detection.mode=ifnd", "detection.num_clusters=[5, 10]", "detection.warmup_epochs=1",
    "detection.accept_start=0.5",
]


def _launch(nproc: int, command: str, sets: list[str], out: Path, extra: list[str] = (),
            succeeds: bool = True) -> subprocess.CompletedProcess:
    """``python -m ifnd COMMAND`` in 1 process, or under torchrun with ``nproc`` gloo processes; it must
    succeed, or (``succeeds=False``) fail."""
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    args = [*(f"--set={s}" for s in [*sets, f"output_dir={out}"]), *extra]
    done = subprocess.run([*launcher, "-m", "ifnd", command, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(out.parent)})
    assert (done.returncode == 0) == succeeds, done.stderr[-3000:]
    return done


def _run(out: Path, nproc: int, batch: int, method: str, extra: list[str] = (),
         succeeds: bool = True) -> subprocess.CompletedProcess:
    return _launch(nproc, "pretrain", [*COMMON, f"method={method}", f"train.batch_size={batch}"], out, extra, succeeds)


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.allclose(value.float(), b[key].float(), atol=1e-4), key


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_two_processes_match_one_process(tmp_path, method):
    # simclr clusters the bank of training embeddings, moco an extra pass sharded over ranks
    features = ["--set=detection.features=" + ("bank" if method == "simclr" else "pass")]
    _run(tmp_path / "single", 1, 32, method, features)
    _run(tmp_path / "double", 2, 16, method, features)
    a = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "double" / "checkpoints" / "last.pt")
    assert torch.equal(a["detector"]["labels"], b["detector"]["labels"])  # same pseudo-labels
    losses_a = [h["loss"] for h in a["history"]]
    losses_b = [h["loss"] for h in b["history"]]
    assert losses_a == pytest.approx(losses_b, abs=1e-4)
    _assert_same_weights(a["model"], b["model"])


@pytest.mark.slow
@pytest.mark.distributed
def test_distributed_run_resumes(tmp_path):
    out = tmp_path / "run"
    _run(out, 2, 16, "moco", ["--set=train.epochs=1"])
    # more epochs would stretch the cosine schedule under the finished epoch: refused on every rank
    refused = _run(out, 2, 16, "moco", ["--set=train.epochs=2", "--resume=auto"], succeeds=False)
    assert "train.epochs=1 (now 2)" in refused.stderr
    _run(out, 2, 16, "moco", ["--set=train.epochs=1", "--resume=auto"])  # every rank loads it; nothing left
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1


@pytest.mark.slow
@pytest.mark.distributed
def test_two_nodes_match_one_process(tmp_path):
    """Two torchrun agents joined by a c10d rendezvous, as on two machines (here both on localhost)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sets = [*COMMON, "method=moco", "train.epochs=2", "detection.features=pass", "train.batch_size=16",
            f"output_dir={tmp_path / 'nodes'}"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "ifnd-test"]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    nodes = [subprocess.Popen([*launcher, "-m", "ifnd", "pretrain", *(f"--set={s}" for s in sets)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [node.communicate(timeout=600)[1] for node in nodes]
    assert all(node.returncode == 0 for node in nodes), errors[0][-3000:] + errors[1][-3000:]
    _run(tmp_path / "single", 1, 32, "moco", ["--set=train.epochs=2", "--set=detection.features=pass"])
    a = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "nodes" / "checkpoints" / "last.pt")
    assert torch.equal(a["detector"]["labels"], b["detector"]["labels"])
    _assert_same_weights(a["model"], b["model"])


def test_single_process_helpers_are_identities():
    from ifnd.runtime import distributed as dist

    rows = torch.arange(6.0).reshape(3, 2)
    out = dist.gather_rows(rows, torch.tensor([4, 0, 2]), total=5)
    assert out[4].tolist() == [0.0, 1.0] and out[0].tolist() == [2.0, 3.0] and out[1].tolist() == [0.0, 0.0]
    assert dist.local_rows(2, 3).tolist() == [0, 1, 2, 3, 4, 5]
    assert dist.sum_ints([1, 2]) == [1, 2] and dist.world_size() == 1 and dist.is_main()


# ---------------------------------------------------------------- image-text matching (itm-train)

WORDS = ["red", "green", "blue", "small", "large", "round", "square", "thin", "bold", "dark"]


def _write_features(root: Path, split: str, num_images: int, seed: int) -> None:
    """``{split}_ims.npy [N, 8]`` and 5 captions per image whose words depend on the image's class."""
    rng = np.random.default_rng(seed)
    classes = np.arange(num_images) % 4
    feats = rng.normal(size=(num_images, 8)).astype(np.float32) + classes[:, None]
    captions = [" ".join(rng.choice(WORDS[c:c + 5], size=4)) for c in classes for _ in range(5)]
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / f"{split}_ims.npy", feats)
    (root / f"{split}_caps.txt").write_text("\n".join(captions) + "\n")


def _itm_sets(root: Path, batch: int, *extra: str) -> list[str]:
    return ["device=cpu", "data.name=features", f"data.root={root}", "data.num_workers=0", "text.min_count=1",
            "text.word_dim=8", "text.hidden_dim=8", "model.embed_dim=16", "model.feature_hidden_dim=16",
            "negatives.memory_size=64", "negatives.min_positives=4", "train.lr=0.002", "train.eval_batch_size=64",
            f"train.batch_size={batch}", *extra]


@pytest.fixture(scope="module")
def itm_features(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("itm_features")
    _write_features(root, "train", 40, seed=0)  # 200 pairs: 6 global batches of 32
    _write_features(root, "dev", 12, seed=1)
    return root


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("sampler", ["hardest", "vsepp"])
def test_itm_two_processes_match_one_process_and_resume(tmp_path, itm_features, sampler):
    # deterministic negatives, so comparable: hardest among the gathered momentum batch plus the memory, or
    # VSE++ on the gathered online batch (gradients through the gather)
    sets = (f"negatives.sampler={sampler}",)
    _launch(1, "itm-train", _itm_sets(itm_features, 32, "train.epochs=2", *sets), tmp_path / "single")
    double = tmp_path / "double"
    _launch(2, "itm-train", _itm_sets(itm_features, 16, "train.epochs=1", *sets), double)
    _launch(2, "itm-train", _itm_sets(itm_features, 16, "train.epochs=2", *sets), double, ["--resume=auto"])
    a = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")
    b = load_checkpoint(double / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert [h["loss"] for h in a["history"]] == pytest.approx([h["loss"] for h in b["history"]], abs=1e-4)
    assert a["history"][-1]["val/rsum"] == pytest.approx(b["history"][-1]["val/rsum"], abs=1e-3)
    _assert_same_weights(a["model"], b["model"])
    if sampler == "hardest":
        assert torch.equal(a["mining"]["memory.ids"], b["mining"]["memory.ids"])  # the ids of both ranks, in order
        assert torch.allclose(a["mining"]["memory.text_feats"], b["mining"]["memory.text_feats"], atol=1e-4)


@pytest.mark.slow
@pytest.mark.distributed
def test_itm_fne_statistics_cover_the_global_batch(tmp_path):
    # 160 images: few repeated images in a batch of 32, so mutual top-1 (reliable) pairs occur
    root = tmp_path / "features"
    _write_features(root, "train", 160, seed=0)
    sets = ("negatives.sampler=fne", "negatives.warmup_epochs=1", "train.epochs=1", "data.val_split=")
    _launch(1, "itm-train", _itm_sets(root, 32, *sets), tmp_path / "single")
    _launch(2, "itm-train", _itm_sets(root, 16, *sets), tmp_path / "double")
    a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt")["mining"] for d in ("single", "double"))
    stats = [key for key in a if key.startswith("sampler.stats.")]
    assert stats and int(a["sampler.stats.count"].sum()) > 0
    for key in stats:
        assert torch.allclose(a[key].double(), b[key].double(), atol=1e-4), key


def test_local_first_in_one_process_moves_nothing():
    from ifnd.runtime import distributed as dist

    order = torch.arange(12)
    assert torch.equal(dist.local_first(order), order)


def test_resume_is_refused_when_the_ranks_see_different_checkpoints(tmp_path, monkeypatch):
    from ifnd.runtime import checkpoint, distributed as dist

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"x")
    assert checkpoint.resolve_resume("auto", tmp_path) == tmp_path / "checkpoints" / "last.pt"
    assert checkpoint.resolve_resume(None, tmp_path) is None
    # rank 1 sits on a node that does not mount output_dir: it would start afresh
    monkeypatch.setattr(dist, "all_objects", lambda view: [view, None])
    with pytest.raises(checkpoint.CheckpointError, match="every node mounts"):
        checkpoint.resolve_resume("auto", tmp_path)


def _sigterm_then_resume(tmp_path: Path, command: str, sets: list[str]) -> tuple[dict, dict]:
    """Start ``command`` under torchrun (2 gloo processes), SIGTERM the agent once epoch 0's checkpoint
    exists, resume, and run the same command straight; returns (resumed, straight) checkpoints."""
    out = tmp_path / "run"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "ifnd", command, *(f"--set={s}" for s in [*sets, f"output_dir={out}"])]
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        agent = subprocess.Popen(launcher, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
                                 env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
        last = out / "checkpoints" / "last.pt"
        deadline = time.monotonic() + 300
        while not last.exists() and agent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert last.exists(), log.read_text()[-3000:]
        agent.send_signal(signal.SIGTERM)  # epoch 0 is done; the rest remains
        agent.wait(timeout=120)
    text = log.read_text()
    assert "interrupted at epoch" in text and "checkpoint saved" in text, text[-3000:]
    assert load_checkpoint(last)["epoch"] < 3
    _launch(2, command, sets, out, ["--resume=auto"])
    _launch(2, command, sets, tmp_path / "straight")
    return tuple(load_checkpoint(d / "checkpoints" / "last.pt") for d in (out, tmp_path / "straight"))


@pytest.mark.slow
@pytest.mark.distributed
def test_sigterm_to_torchrun_checkpoints_and_stops_every_rank(tmp_path):
    """A scheduler's SIGTERM (preemption, time limit) reaches the workers through torchrun:
    they stop at the same step, rank 0 writes the checkpoint, and resuming ends with the
    weights of a run that was never stopped."""
    sets = [*COMMON, "method=moco", "train.batch_size=8", "detection.mode=none", "data.max_train_samples=1200",
            "train.epochs=3"]
    resumed, straight = _sigterm_then_resume(tmp_path, "pretrain", sets)
    assert resumed["epoch"] == straight["epoch"] == 3
    _assert_same_weights(resumed["model"], straight["model"])  # as if never stopped


@pytest.mark.slow
@pytest.mark.distributed
def test_itm_sigterm_to_torchrun_checkpoints_and_resumes_exactly(tmp_path):
    root = tmp_path / "features"
    _write_features(root, "train", 400, seed=0)  # 2,000 pairs: 125 steps of 2 x 8 per epoch
    _write_features(root, "dev", 12, seed=1)
    sets = _itm_sets(root, 8, "train.epochs=3", "negatives.sampler=fne")
    resumed, straight = _sigterm_then_resume(tmp_path, "itm-train", sets)
    assert resumed["epoch"] == straight["epoch"] == 3
    _assert_same_weights(resumed["model"], straight["model"])
    assert torch.equal(resumed["mining"]["memory.ids"], straight["mining"]["memory.ids"])


@pytest.mark.slow
@pytest.mark.distributed
def test_moco_linear_protocol_two_processes_match_one_process(tmp_path, checkpoint):
    """configs/imagenet_linear.yaml under torchrun: 2 x 4 images per step end with the classifier of 1 x 8
    (per-sample seeded crops, gradients averaged, the test split sharded and gathered)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 3)):
        for c in range(2):
            (tmp_path / split / f"n0{c}").mkdir(parents=True)
            for i in range(n):
                pixels = np.full((24, 30, 3), 60 + 120 * c) + rng.integers(0, 40, (24, 30, 3))
                Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / split / f"n0{c}" / f"{i}.JPEG")
    sets = ["device=cpu", f"data.root={tmp_path / 'train'}", f"data.test_root={tmp_path / 'val'}", "data.image_size=16",
            "data.num_workers=0", "linear.eval_resize=18", "linear.epochs=2", "linear.lr_steps=[1]"]
    extra = ["--checkpoint", str(checkpoint), "--config", "configs/imagenet_linear.yaml"]
    runs = {n: tmp_path / f"p{n}" for n in (1, 2)}
    for n, out in runs.items():
        _launch(n, "linear", [*sets, f"linear.batch_size={8 // n}"], out, extra)
    one, two = (load_checkpoint(out / "checkpoints" / "last.pt") for out in runs.values())
    _assert_same_weights(one["model"], two["model"])
    assert one["history"][-1]["test_top1"] == two["history"][-1]["test_top1"]
