from dataforge.config.base import StrictModel, load_config, validate_config

__all__ = ["StrictModel", "load_config", "validate_config"]
