"""Time one image-text matching step with FNE sampling vs the hardest negative, memory 8,192.

Both samplers run the same :func:`ifnd.itm.step.itm_step` (momentum update, candidates =
momentum batch + memory, in-batch statistics for FNE, bidirectional triplet loss, enqueue)
and differ only in the negative choice. Three measurements:

* ``negative choice only``: the selector on one ``[B, B + memory]`` similarity matrix
  (FNE: weights, Bayes posterior, cut-down, draw; hardest: top-1);
* ``sampler + loss``: encoders replaced by a learnable offset on given synthetic
  embeddings (clustered by image and by class, so false negatives and non-trivial
  weights exist), step + backward: what FNE adds, undiluted;
* ``whole step``: the demo model (small_cnn images, GRU captions) on a batch of demo
  pairs, step + backward + Adam update, after a short hardest-negative warm-up training;
  the memory holds the model's own momentum embeddings of other demo pairs, the FNE
  statistics its own similarities.

FNE runs after its warm-up with ready statistics (the full Bayes path). The two samplers
alternate step by step and the median step time of each is reported: the machine may
be shared.

The settings are an experiment file (``--config``, default
configs/experiments/bench_fne_step.yaml): ``base`` image-text matching config keys (the
demo model and data; ``train.batch_size``, ``model.embed_dim``, ``negatives.memory_size``)
and ``steps``, ``warmup_steps``, ``threads``. ``--set KEY=VALUE`` changes a config key; the
other flags override the file.

    python tools/bench_fne_step.py [--batch-size 128] [--dim 1024] [--memory 8192] [--steps 40]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ifnd.config import add_config_args, format_override, load_experiment, resolve
from ifnd.falseneg.bayes import FNESampler
from ifnd.itm.data import PairDataset, collate_pairs, image_transform, load_demo
from ifnd.itm.model import Architecture, ITMModel, build_itm_model
from ifnd.itm.objective import gather_candidates, similarities
from ifnd.itm.schema import ITM_SCHEMA
from ifnd.itm.step import NegativeMining, itm_step
from ifnd.itm.text import Vocabulary
from ifnd.runtime.timing import interleaved_median_times

EXPERIMENT = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "bench_fne_step.yaml"
SETTINGS = ("steps", "warmup_steps", "threads")
SAMPLERS = ("fne", "hardest")


class GivenEmbeddings(nn.Module):
    """Stand-in encoder: normalise(input + learnable offset); the input *is* the embedding ``[B, D]``."""

    def __init__(self, dim: int):
        super().__init__()
        self.offset = nn.Parameter(torch.zeros(dim))

    def forward(self, feats: Tensor, lengths: Tensor | None = None) -> Tensor:
        return F.normalize(feats + self.offset, dim=1)


def image_centres(num_images: int, dim: int, num_classes: int, generator: torch.Generator) -> Tensor:
    """``[num_images, dim]``: image ``i`` lies near the centre of its class ``i % num_classes``."""
    classes = torch.randn(num_classes, dim, generator=generator)
    return classes[torch.arange(num_images) % num_classes] + 0.8 * torch.randn(num_images, dim, generator=generator)


def noisy_pairs(centres: Tensor, ids: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Image and caption unit embeddings ``[len(ids), dim]``: two noisy copies of each image's centre.

    Pairs are close, images of one class fairly close (false negatives), other classes far.
    """
    def view() -> Tensor:
        return F.normalize(centres[ids] + 0.8 * torch.randn(len(ids), centres.shape[1], generator=generator), dim=1)
    return view(), view()


def mining_for(sampler: str, args: argparse.Namespace) -> NegativeMining:
    """Negative mining past FNE's warm-up, memory still empty."""
    cfg = resolve(args.cfg.to_dict(), [f"negatives.sampler={sampler}"], schema=ITM_SCHEMA)
    mining = NegativeMining.from_config(cfg)
    mining.start_epoch(1)
    return mining


def synthetic_mining(sampler: str, args: argparse.Namespace, centres: Tensor) -> NegativeMining:
    """Memory full of synthetic pairs; FNE statistics at typical trained values."""
    mining = mining_for(sampler, args)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(centres), (args.memory,), generator=generator)
    mining.memory.enqueue(*noisy_pairs(centres, ids, generator), ids)
    if sampler == "fne":  # positives ~0.6, hardest in-batch negatives ~0.4
        mining.sampler.stats.update(0.6 + 0.1 * torch.randn(500, generator=generator),
                                    0.4 + 0.1 * torch.randn(1000, generator=generator))
    return mining


@torch.no_grad()
def model_mining(sampler: str, args: argparse.Namespace, model: ITMModel, batches: list[tuple[Tensor, ...]]) -> NegativeMining:
    """Memory full of the model's momentum embeddings; FNE statistics from its in-batch similarities."""
    mining = mining_for(sampler, args)
    for images, tokens, lengths, ids in batches:
        image_mom, text_mom = model.momentum_forward(images, tokens, lengths)
        mining.memory.enqueue(image_mom, text_mom, ids)
        if sampler == "fne":
            mining.sampler.update_stats(model(images, tokens, lengths)[0] @ text_mom.T)
    return mining


def bench(make_step: Callable[[str], Callable[[], None]], steps: int) -> dict[str, float]:
    """Median seconds per step of each sampler, the samplers interleaved (:func:`interleaved_median_times`)."""
    return interleaved_median_times({name: make_step(name) for name in SAMPLERS}, steps, warmup=2)


def synthetic_batch(args: argparse.Namespace) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(image centres, batch ids [B], image embeddings [B, D], caption embeddings [B, D])``."""
    generator = torch.Generator().manual_seed(1)
    centres = image_centres(args.memory // 5, args.dim, 10, generator)
    ids = torch.randint(0, len(centres), (args.batch_size,), generator=generator)
    return (centres, ids, *noisy_pairs(centres, ids, generator))


def loss_part(args: argparse.Namespace) -> Callable[[str], Callable[[], None]]:
    centres, ids, image_in, text_in = synthetic_batch(args)
    lengths = torch.ones(args.batch_size, dtype=torch.long)

    def make(sampler: str) -> Callable[[], None]:
        model = ITMModel(GivenEmbeddings(args.dim), GivenEmbeddings(args.dim))
        mining = synthetic_mining(sampler, args, centres)

        def step() -> None:
            itm_step(model, mining, image_in, text_in, lengths, ids).loss.backward()
        return step
    return make


def choice_only(args: argparse.Namespace) -> Callable[[str], Callable[[], None]]:
    centres, ids, image_in, text_in = synthetic_batch(args)

    def make(sampler: str) -> Callable[[], None]:
        mining = synthetic_mining(sampler, args, centres)
        candidates = gather_candidates(image_in, text_in, ids, mining.memory)
        sims = similarities(image_in, text_in, candidates)[0]
        mask = ids.unsqueeze(1) == candidates.ids.unsqueeze(0)
        select = mining.selector()
        return lambda: select(sims, sims.diagonal(), mask)
    return make


def warmed_up_model(cfg: Any, vocab_size: int, batches: list[tuple[Tensor, ...]], steps: int) -> ITMModel:
    """The demo model after ``steps`` hardest-negative steps (in-batch), so that similarities have structure."""
    torch.manual_seed(0)
    model = build_itm_model(cfg, Architecture(vocab_size, cfg.model.backbone, cfg.model.cifar_stem))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
    mining = NegativeMining("hardest", FNESampler(), None, momentum=0.9)
    for index in range(steps):
        loss = itm_step(model, mining, *batches[index % len(batches)]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model


def whole_step(args: argparse.Namespace) -> Callable[[str], Callable[[], None]]:
    cfg = args.cfg
    split = load_demo("train", cfg.data.image_size)
    vocab = Vocabulary.build(split.captions, cfg.text.min_count)
    pairs = PairDataset(split, image_transform(cfg, train=True), vocab)
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0)).tolist()
    size = args.batch_size
    batches = [collate_pairs([pairs[order[(start + i) % len(pairs)]] for i in range(size)])
               for start in range(0, args.memory + size, size)]  # the memory's, then the timed one
    warm = warmed_up_model(cfg, len(vocab), batches, args.warmup_steps)

    def make(sampler: str) -> Callable[[], None]:
        model = copy.deepcopy(warm)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
        mining = model_mining(sampler, args, model, batches[:-1])

        def step() -> None:
            out = itm_step(model, mining, *batches[-1])
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
        return step
    return make


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, example="negatives.memory_size=4096")
    parser.add_argument("--batch-size", type=int, help="a shortcut for --set train.batch_size")
    parser.add_argument("--dim", type=int, help="joint embedding width (VSE++: 1024); a shortcut for --set model.embed_dim")
    parser.add_argument("--memory", type=int, help="a shortcut for --set negatives.memory_size")
    parser.add_argument("--steps", type=int, help="timed steps per sampler and measurement")
    parser.add_argument("--warmup-steps", type=int,
                        help="hardest-negative training steps of the demo model before the whole-step timing")
    parser.add_argument("--threads", type=int,
                        help="torch intra-op threads (1 avoids spin-wait stalls on a shared, busy CPU)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    experiment = load_experiment(args.config or EXPERIMENT, SETTINGS, schema=ITM_SCHEMA)
    shortcuts = {"train.batch_size": args.batch_size, "model.embed_dim": args.dim, "negatives.memory_size": args.memory}
    args.cfg = experiment.config([*(format_override(k, v) for k, v in shortcuts.items() if v is not None),
                                  *args.overrides])
    args.batch_size, args.dim = args.cfg.train.batch_size, args.cfg.model.embed_dim
    args.memory = args.cfg.negatives.memory_size
    for key in SETTINGS:  # a flag overrides the file
        if getattr(args, key) is None:
            setattr(args, key, experiment.settings[key])
    torch.set_num_threads(args.threads)
    print(f"B={args.batch_size}, D={args.dim}, memory={args.memory}, {args.threads} thread(s), "
          f"median of {args.steps} steps each ({experiment.path.name})\n")
    print("| measured | FNE ms/step | hardest ms/step | FNE / hardest |\n|---|---|---|---|")
    measures = (("negative choice only (one direction)", choice_only(args)),
                ("sampler + loss, both directions (+ backward)", loss_part(args)),
                ("whole step (demo model, + backward + Adam)", whole_step(args)))
    for name, make in measures:
        result = bench(make, args.steps)
        print(f"| {name} | {1000 * result['fne']:.2f} | {1000 * result['hardest']:.2f} | "
              f"{result['fne'] / result['hardest']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
