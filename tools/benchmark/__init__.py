"""Benchmarks, each a module run from the repository root (docs/benchmarks.md explains the tables):

    python -m tools.benchmark            model steps and memory, SVFAP against ViT-B, side by side
    python -m tools.benchmark.gpu_check  eager, compiled and CUDA-graph steps, profiled, and the loader feeding them
    python -m tools.benchmark.loader     CPU cost of the training loaders against a naive reader
    python -m tools.benchmark.learning   the demo run: does the pipeline learn, and how fast
    python -m tools.benchmark.fidelity   pixels against the release's PIL operations; the augmentation's CPU per clip
    python -m tools.benchmark.faces      the face detector's hit rate, steadiness and speed
"""
