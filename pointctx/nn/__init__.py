"""pointctx.nn."""
