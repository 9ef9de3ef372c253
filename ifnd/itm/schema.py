"""Config schema of image-text matching (``itm-train`` / ``itm-eval``).

Assembled from the shared fragments of :mod:`ifnd.config` (run, train, negatives: one meaning
everywhere) and the keys of this command (the pair data, the text encoder, the joint space,
the memory, the triplet margin, the step decay of Adam's learning rate). Load with
``load_config(path, overrides, schema=ITM_SCHEMA)``.
"""

from __future__ import annotations

from ifnd.config import NEGATIVES_KEYS, RUN_KEYS, TRAIN_KEYS, Option, compose
from ifnd.models.backbones import BACKBONES

ITM_KEYS: dict[str, Option] = {
    # --- data ------------------------------------------------------------------
    "data.name": Option("demo", "demo: built-in digits with generated captions (offline); karpathy: dataset_coco.json / dataset_flickr30k.json with images under data.root; features: {split}_ims.npy + {split}_caps.txt in data.root.", ("demo", "karpathy", "features")),
    "data.root": Option("", "karpathy: image folder (filepath/filename below it); features: folder of the .npy / .txt files; demo: unused."),
    "data.annotations": Option("", "karpathy only: path of the Karpathy-split JSON; empty: the single dataset_*.json inside data.root."),
    "data.train_splits": Option(["train"], "Splits trained on (COCO usually adds restval).", item_type=str),
    "data.val_split": Option("auto", "Split evaluated after every epoch (selects best.pt); auto: dev for the features (SCAN) layout, val otherwise; empty: none."),
    "data.captions_per_image": Option(5, "features only: captions per image row in {split}_caps.txt, in order."),
    "data.image_size": Option(224, "Side of the square images fed to the image encoder, in pixels (not used by features)."),
    "data.train_augment": Option("crop_flip", "Training image augmentation: none, random resized crop, or crop plus horizontal flip.", ("none", "crop", "crop_flip")),
    "data.normalize": Option(True, "Normalise images with ImageNet mean and std."),
    "data.caption_attributes": Option([1, 3], "demo only: [fewest, most] attributes (of 6: ink, slant, width, height, row, column) each caption names besides its digit, 0 <= fewest <= most <= 6; more attributes fit fewer images (fewer false negatives). [1, 3]: the original demo (a caption fits 46 of the 1,437 training images on average); [0, 0]: the digit only (144); [6, 6] with data.caption_bins=6: about 1.2. The measured density is logged and in metrics.json (data_density).", item_type=int),
    "data.caption_bins": Option(3, "demo only: equal-count bins of each attribute over the training images, >= 2 (3: terciles, the original demo); above 3 each phrase also names its bin ('grade 2 of 6'), a cue that singles out fewer images."),
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
    # --- negatives: the memory and the triplet loss -------------------------------
    "negatives.use_memory": Option(True, "Candidates are the momentum batch plus the memory (else the momentum batch only). FNE's warm-up epochs always use the batch only."),
    "negatives.memory_size": Option(8192, "Entries of the FIFO memory of momentum embeddings with image ids (>= the global batch: train.batch_size x processes)."),
    "negatives.margin": Option(0.2, "Triplet ranking margin."),
    "negatives.temperature": Option(0.07, "infonce: softmax temperature of the symmetric in-batch InfoNCE."),
    "negatives.fne_warmup": Option("vsepp", "fne: what its warm-up epochs train. vsepp: VSE++ on online x online, the memory neither used nor filled (the original FNE code); hardest: the hardest momentum candidate of the batch, the memory filled.", ("vsepp", "hardest")),
    "negatives.stats_from": Option("online", "fne: the in-batch similarities its statistics come from. online: online images x online captions (the original FNE code); momentum: online x momentum, as the loss sees the candidates.", ("online", "momentum")),
    # --- training: Adam with a step decay ------------------------------------------
    "train.lr_decay": Option(0.1, "Factor applied to the learning rate at each of train.lr_decay_epochs."),
    "train.lr_decay_epochs": Option([15], "0-based epochs at whose start the learning rate is multiplied by train.lr_decay.", item_type=int),
    "train.eval_batch_size": Option(256, "Batch size when embedding images and captions for evaluation.", positive=True),
}

# Defaults of shared keys that differ here: Adam on a triplet loss, not SGD on InfoNCE.
ITM_DEFAULTS = {
    "output_dir": "runs/itm",
    "train.epochs": 25,
    "train.batch_size": 128,
    "train.lr": 2e-4,
    "train.lr_scaling": "none",
    "train.weight_decay": 0.0,
    "train.grad_clip": 2.0,
    # the best measured at both ends of the image-text noise map (docs/results.md); FNE: negatives.sampler=fne
    "negatives.sampler": "infonce",
    "negatives.num_samples": 1,
}

ITM_SCHEMA: dict[str, Option] = compose(RUN_KEYS, ITM_KEYS, TRAIN_KEYS, NEGATIVES_KEYS, defaults=ITM_DEFAULTS)
