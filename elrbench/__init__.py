"""elrbench: trainability studies of deep normalized networks (effective learning rates, warm-ups, depth)."""
__version__ = "0.1.0"
