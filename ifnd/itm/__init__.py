"""Image-text matching with Bayesian false-negative elimination (FNE).

Modules, in the order data flows through them:

* :mod:`~ifnd.itm.schema` — every config key (``ITM_SCHEMA``);
* :mod:`~ifnd.itm.data` — Karpathy JSON, precomputed features and the built-in demo
  set (:mod:`~ifnd.itm.demo_captions`), the datasets and collation;
* :mod:`~ifnd.itm.text` — tokenizer, vocabulary, bidirectional-GRU caption encoder;
* :mod:`~ifnd.itm.model` — image encoders, momentum copies, pretrained backbones;
* :mod:`~ifnd.itm.objective` — bidirectional triplet loss over chosen negatives;
* :mod:`~ifnd.itm.step` — negative mining state and one training step;
* :mod:`~ifnd.itm.train` — the training loop (``itm-train``);
* :mod:`~ifnd.itm.evaluate` — R@K of a model or checkpoint (``itm-eval``); the metric
  code itself is :mod:`ifnd.metrics.retrieval`;
* :mod:`~ifnd.itm.commands` — ``add_subcommands`` for the CLI.
"""
