"""The model side of nas: elastic primitives, block families, the supernet and its training."""
