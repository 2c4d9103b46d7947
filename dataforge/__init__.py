"""dataforge: build instruction-tuning datasets, tune, and check what the tune did to the model."""

__version__ = "0.1.0"
