"""Experiment loggers (Weights & Biases, or none)."""
