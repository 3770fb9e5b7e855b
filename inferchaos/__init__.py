"""inferchaos: chaos engineering for ML inference clusters."""

__version__ = "0.1.0"
