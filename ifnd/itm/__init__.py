"""Image-text matching with Bayesian false-negative elimination (FNE).

Modules: :mod:`~ifnd.itm.schema` (config keys), :mod:`~ifnd.itm.data` (Karpathy JSON,
precomputed features, built-in demo), :mod:`~ifnd.itm.text` (vocabulary, GRU encoder),
:mod:`~ifnd.itm.model` (image encoders, momentum copies), :mod:`~ifnd.itm.objective`
(triplet loss over chosen negatives), :mod:`~ifnd.itm.step` (one training step),
:mod:`~ifnd.itm.train` (the loop), :mod:`~ifnd.itm.evaluate` (R@K of a checkpoint),
:mod:`~ifnd.itm.commands` (``itm-train`` / ``itm-eval``).
"""
