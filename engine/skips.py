"""One budget for unreadable samples, the same in every loader and task."""

from __future__ import annotations

from engine.config import ConfigError

__all__ = ["SkipBudget", "TooManyBrokenFilesError"]


class TooManyBrokenFilesError(ConfigError):
    """More training samples were unreadable than the run's budget allows."""


class SkipBudget:
    """Counts skipped (unreadable, replaced) samples job-wide; stops the run past a fraction.

    Args:
        max_fraction: stop when skipped / read exceeds this...
        min_seen: ...once at least this many samples were read (job-wide).
        keep_examples: file names kept for the message.
    """

    def __init__(self, max_fraction: float = 0.01, min_seen: int = 200, keep_examples: int = 5) -> None:
        self.max_fraction = max_fraction
        self.min_seen = min_seen
        self.keep_examples = keep_examples
        self.skipped = 0
        self.seen = 0
        self.examples: list[str] = []

    def update(self, skipped: int, seen: int, files: list[str] = ()) -> None:
        """Add job-wide counts (``seen`` includes the skipped ones) and this process's file names."""
        self.skipped += int(skipped)
        self.seen += int(seen)
        room = self.keep_examples - len(self.examples)
        if room > 0:
            self.examples += list(files)[:room]

    def check(self) -> None:
        if self.seen >= self.min_seen and self.skipped > self.max_fraction * self.seen:
            raise TooManyBrokenFilesError(
                f"{self.skipped} of {self.seen} training samples could not be read (more than "
                f"max_skipped_fraction={self.max_fraction}); examples: {', '.join(self.examples) or '(other ranks)'}. "
                "Repair or remove those files (python tools/check_data.py lists them all) or raise the "
                "fraction (--set data.max_skipped_fraction=...)"
            )

    def state_dict(self) -> dict:
        return {"skipped": self.skipped, "seen": self.seen, "examples": list(self.examples)}

    def load_state_dict(self, state: dict) -> None:
        self.skipped = int(state.get("skipped", 0))
        self.seen = int(state.get("seen", 0))
        self.examples = list(state.get("examples", []))
