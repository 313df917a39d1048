"""The training loop with atomic checkpoints and bit-identical resumption; inference and the test-set
metrics of a trained model."""
