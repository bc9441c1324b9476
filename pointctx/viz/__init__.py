"""pointctx.viz."""
