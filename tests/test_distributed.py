"""torchrun with 2 CPU processes (gloo) against 1 process on the same global batch."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ifnd.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]

COMMON = [
    "device=cpu", "data.name=digits", "data.image_size=16", "data.num_workers=0", "data.max_train_samples=128",
    "model.backbone=small_cnn", "model.proj_hidden_dim=32", "model.proj_dim=16", "model.norm=group",
    "moco.queue_size=64", "train.epochs=3", "train.lr=0.3", "knn.every=0", "knn.k=10",
    "detection.mode=ifnd", "detection.num_clusters=[5, 10]", "detection.warmup_epochs=1",
    "detection.accept_start=0.5",
]


def _run(out: Path, nproc: int, batch: int, method: str, extra: list[str] = ()) -> subprocess.CompletedProcess:
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    sets = [f"--set={s}" for s in [*COMMON, f"method={method}", f"train.batch_size={batch}", f"output_dir={out}"]]
    args = [*sets, *extra]
    return subprocess.run([*launcher, "-m", "ifnd", "pretrain", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(out.parent)})


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_two_processes_match_one_process(tmp_path, method):
    # simclr clusters the bank of training embeddings, moco an extra pass sharded over ranks
    features = ["--set=detection.features=" + ("bank" if method == "simclr" else "pass")]
    single = _run(tmp_path / "single", 1, 32, method, features)
    assert single.returncode == 0, single.stderr[-3000:]
    double = _run(tmp_path / "double", 2, 16, method, features)
    assert double.returncode == 0, double.stderr[-3000:]
    a = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "double" / "checkpoints" / "last.pt")
    assert torch.equal(a["detector"]["labels"], b["detector"]["labels"])  # same pseudo-labels
    losses_a = [h["loss"] for h in a["history"]]
    losses_b = [h["loss"] for h in b["history"]]
    assert losses_a == pytest.approx(losses_b, abs=1e-4)
    for key, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][key].float(), atol=1e-4), key


def test_distributed_run_resumes(tmp_path):
    out = tmp_path / "run"
    first = _run(out, 2, 16, "moco", ["--set=train.epochs=1"])
    assert first.returncode == 0, first.stderr[-3000:]
    second = _run(out, 2, 16, "moco", ["--set=train.epochs=2", "--resume=auto"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 2


def test_single_process_helpers_are_identities():
    from ifnd.train import distributed as dist

    rows = torch.arange(6.0).reshape(3, 2)
    out = dist.gather_rows(rows, torch.tensor([4, 0, 2]), total=5)
    assert out[4].tolist() == [0.0, 1.0] and out[0].tolist() == [2.0, 3.0] and out[1].tolist() == [0.0, 0.0]
    assert dist.local_rows(2, 3).tolist() == [0, 1, 2, 3, 4, 5]
    assert dist.sum_ints([1, 2]) == [1, 2] and dist.world_size() == 1 and dist.is_main()
