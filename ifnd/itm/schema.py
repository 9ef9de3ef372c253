"""Config schema of image-text matching (``itm-train`` / ``itm-eval``).

Load with ``load_config(path, overrides, schema=ITM_SCHEMA)``: unknown keys, wrong
types and values outside the choices are refused with the key's name.
"""

from __future__ import annotations

from ifnd.config import Option
from ifnd.models.backbones import BACKBONES

ITM_SCHEMA: dict[str, Option] = {
    # --- run -------------------------------------------------------------------
    "seed": Option(0, "Seed for weights, caption order and negative draws."),
    "output_dir": Option("runs/itm", "Run directory: config.yaml, checkpoints/, metrics.json, TensorBoard events, eval/."),
    "device": Option("auto", "Where to train: auto picks cuda when available.", ("auto", "cpu", "cuda")),
    # --- data ------------------------------------------------------------------
    "data.name": Option("demo", "demo: built-in digits with generated captions (offline); karpathy: dataset_coco.json / dataset_flickr30k.json with images under data.root; features: {split}_ims.npy + {split}_caps.txt in data.root.", ("demo", "karpathy", "features")),
    "data.root": Option("", "karpathy: image folder (filepath/filename below it); features: folder of the .npy / .txt files; demo: unused."),
    "data.annotations": Option("", "karpathy only: path of the Karpathy-split JSON; empty: the single dataset_*.json inside data.root."),
    "data.train_splits": Option(["train"], "Splits trained on (COCO usually adds restval).", item_type=str),
    "data.val_split": Option("val", "Split evaluated after every epoch (selects best.pt); empty: none. The features layout calls it dev."),
    "data.captions_per_image": Option(5, "features only: captions per image row in {split}_caps.txt, in order."),
    "data.image_size": Option(224, "Side of the square images fed to the image encoder, in pixels (not used by features)."),
    "data.train_augment": Option("crop_flip", "Training image augmentation: none, random resized crop, or crop plus horizontal flip.", ("none", "crop", "crop_flip")),
    "data.normalize": Option(True, "Normalise images with ImageNet mean and std."),
    "data.max_train_images": Option(0, "Use only the first N training images with all their captions (0 = all); for quick runs."),
    "data.num_workers": Option(2, "DataLoader worker processes (0 = load in the main process)."),
    # --- text encoder -----------------------------------------------------------
    "text.min_count": Option(4, "Words seen fewer times in the training captions map to <unk>."),
    "text.word_dim": Option(300, "Word embedding width."),
    "text.hidden_dim": Option(512, "GRU hidden width per direction."),
    "text.num_layers": Option(1, "Stacked bidirectional GRU layers."),
    "text.pooling": Option("mean", "Sentence vector: mean of the GRU outputs over the words, or the final states of both directions.", ("mean", "last")),
    # --- image encoder and joint space ------------------------------------------
    "model.embed_dim": Option(1024, "Width of the joint (L2-normalised) embedding space."),
    "model.backbone": Option("resnet18", "Image backbone when no image_checkpoint is given (images only).", BACKBONES),
    "model.cifar_stem": Option(False, "ResNets: 3x3 stride-1 first convolution and no max-pool, for small images."),
    "model.image_checkpoint": Option("", "An `ifnd pretrain` checkpoint whose backbone (and its architecture) initialises the image encoder; empty: fresh backbone."),
    "model.feature_hidden_dim": Option(1024, "features only: hidden width of the MLP applied to each precomputed feature before mean-pooling."),
    "model.momentum": Option(0.995, "EMA momentum of the momentum image and text encoders that fill the memory."),
    # --- negatives ---------------------------------------------------------------
    "negatives.sampler": Option("fne", "fne: Bayesian false-negative-aware sampling (after warm-up); hardest: VSE++ hardest negative.", ("fne", "hardest")),
    "negatives.use_memory": Option(True, "Candidates are the momentum batch plus the memory (else the momentum batch only). FNE's warm-up epochs always use the batch only."),
    "negatives.memory_size": Option(8192, "Entries of the FIFO memory of momentum embeddings with image ids (>= the global batch: train.batch_size x processes)."),
    "negatives.num_samples": Option(1, "Negatives per anchor and direction."),
    "negatives.margin": Option(0.2, "Triplet ranking margin."),
    "negatives.warmup_epochs": Option(1, "fne: epochs of hardest-negative training (batch candidates) before sampling starts."),
    "negatives.tau": Option(0.5, "fne: temperature of the sampling-weight kernels."),
    "negatives.prior": Option(1e-4, "fne: prior probability that a candidate is a false negative."),
    "negatives.fn_threshold": Option(1e-3, "fne: false-negative probability above which a candidate is down-weighted."),
    "negatives.cut_down": Option(True, "fne: never draw easy negatives (similarity <= positive mean - cut_margin)."),
    "negatives.cut_margin": Option(0.2, "fne: how far below the running positive mean a negative counts as easy."),
    "negatives.min_positives": Option(200, "fne: reliable positives needed in the current epoch before the statistics are used."),
    # --- training ---------------------------------------------------------------
    "train.epochs": Option(25, "Number of training epochs."),
    "train.batch_size": Option(128, "Image-caption pairs per step and process (the global batch is this x the torchrun processes)."),
    "train.lr": Option(2e-4, "Adam learning rate."),
    "train.lr_decay": Option(0.1, "Factor applied to the learning rate at each of train.lr_decay_epochs."),
    "train.lr_decay_epochs": Option([15], "0-based epochs at whose start the learning rate is multiplied by train.lr_decay.", item_type=int),
    "train.weight_decay": Option(0.0, "Adam weight decay."),
    "train.grad_clip": Option(2.0, "Clip the gradient norm to this value (0 = no clipping)."),
    "train.log_every_steps": Option(10, "TensorBoard step-scalar interval."),
    "train.eval_batch_size": Option(256, "Batch size when embedding images and captions for evaluation."),
    "train.amp": Option(True, "Mixed precision (bfloat16 autocast) for the image encoders on GPU; the text encoder, similarities, FNE statistics and loss stay float32. Ignored on CPU."),
    "train.channels_last": Option(True, "channels_last memory format for the image encoders and images on GPU; ignored on CPU and for features."),
}
