"""The trainer's error for a setting that cannot work (binaries exit 2 on it, naming the binding)."""


class ConfigError(ValueError):
    """A setting of `train()` that cannot work; the message names the binding."""
