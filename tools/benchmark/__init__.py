"""Benchmarks, each a module run from the repository root (docs/benchmarks.md explains the tables):

    python -m tools.benchmark            model steps, memory and the loader, SVFAP against ViT-B
    python -m tools.benchmark.loader     CPU cost of the training loaders against a naive reader
    python -m tools.benchmark.learning   the demo run: does the pipeline learn, and how fast
    python -m tools.benchmark.fidelity   pixels against the release's PIL operations; the augmentation's CPU per clip
"""
