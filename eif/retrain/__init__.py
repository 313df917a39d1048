"""Re-weighting and re-training the embedding head for many confusions at once, and the resulting Δd."""
