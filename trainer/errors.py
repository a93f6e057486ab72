"""The trainer's error for a setting that cannot work (binaries exit 2 on it, naming the binding):
`common.errors.ConfigError`, under the name the trainer's modules have always used."""
from common.errors import ConfigError, require

__all__ = ["ConfigError", "require"]
