"""Training and evaluation loops, distributed setup, optimisation, checkpoints and reports."""
