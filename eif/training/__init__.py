"""The training loop with atomic checkpoints and bit-identical resumption."""
