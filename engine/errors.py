"""The base of every user-facing error: the tools print its message (which names the file / key and
the fix) instead of a traceback."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file / key and the fix."""
