"""pointctx.datasets."""
