"""Measurements shared by training monitors and evaluation commands (kNN, top-k, retrieval R@K)."""
