"""One budget for unreadable training files, the same in every loop.

Loaders replace an unreadable sample by another one and report, per collated batch,
``batch["skipped"]`` (int) and ``batch["skipped_files"]`` (list of "path (reason)" strings). The loop
feeds each batch to :class:`SkipBudget` and checks it at every step::

    budget = SkipBudget(cfg.data.max_skipped_fraction, min_seen=1000)
    budget.load_state_dict(ckpt.get("skips", {}))                 # on resume
    for batch in loader:
        budget.update(batch["skipped"], seen=batch_size + batch["skipped"], files=batch["skipped_files"])
        budget.sync(device)                                        # DDP: every rank, every step
        budget.check()   # raises TooManyBrokenFilesError; save a checkpoint first (see below)
        ...
    state["skips"] = budget.state_dict()                           # in every checkpoint

``sync`` is one small all-reduce, so every rank reaches the same verdict at the same step; a
loop that wants a checkpoint before stopping calls ``budget.exceeded()`` and then ``check()``.
"""

from __future__ import annotations

import torch

from engine.config import ConfigError
from engine.distributed import all_gather_object, all_reduce_sum, is_dist_initialized

__all__ = ["SkipBudget", "TooManyBrokenFilesError"]


class TooManyBrokenFilesError(ConfigError):
    """More training files were unreadable than the skip budget allows."""


class SkipBudget:
    """Counts skipped (unreadable) samples against samples seen, job-wide, across resumes.

    Args:
        max_fraction: stop once skipped / seen exceeds this (e.g. 0.01)...
        min_seen: ...and at least this many samples have been seen (job-wide), so that a few
            broken files at the very start do not stop a run on a large dataset.
        keep_examples: file descriptions kept for the message.
        what: how the fix names the setting, e.g. "data.max_skipped_fraction".
    """

    def __init__(
        self, max_fraction: float = 0.01, min_seen: int = 1000, keep_examples: int = 5,
        what: str = "data.max_skipped_fraction",
    ) -> None:
        self.max_fraction = float(max_fraction)
        self.min_seen = int(min_seen)
        self.keep_examples = int(keep_examples)
        self.what = what
        self._base = (0, 0)  # job-wide (seen, skipped) restored from a checkpoint
        self._local = [0, 0]  # this process since start / resume
        self.seen, self.skipped = 0, 0  # job-wide totals as of the last update / sync
        self.examples: list[str] = []
        self._synced_examples = 0  # job-wide skipped count when examples were last gathered

    def update(self, skipped: int, seen: int, files: list[str] | tuple[str, ...] = ()) -> None:
        """Record one batch: ``seen`` samples attempted (kept + skipped), ``skipped`` unreadable."""
        if skipped < 0 or seen < skipped:
            raise ValueError(f"need 0 <= skipped <= seen, got skipped={skipped}, seen={seen}")
        self._local[0] += int(seen)
        self._local[1] += int(skipped)
        room = self.keep_examples - len(self.examples)
        if room > 0:
            self.examples += [str(f) for f in files[:room]]
        if not is_dist_initialized():
            self.seen, self.skipped = self._base[0] + self._local[0], self._base[1] + self._local[1]

    def sync(self, device: torch.device | str = "cpu") -> None:
        """Sum the counts over ranks (a collective: every rank must call it at the same step).

        ``device`` must suit the backend (the GPU under NCCL). Examples are gathered only when the
        job-wide skip count grew, so a clean run pays one 2-element all-reduce per call.
        """
        if not is_dist_initialized():
            return
        local = torch.tensor(self._local, dtype=torch.float64, device=device)
        total = all_reduce_sum(local).cpu()
        self.seen = self._base[0] + int(total[0])
        self.skipped = self._base[1] + int(total[1])
        if self.skipped > self._synced_examples and len(self.examples) < self.keep_examples:
            merged = [e for rank_examples in all_gather_object(self.examples) for e in rank_examples]
            self.examples = list(dict.fromkeys(merged))[: self.keep_examples]
            self._synced_examples = self.skipped

    def exceeded(self) -> bool:
        """True when the budget is spent (a loop may save a checkpoint, then call :meth:`check`)."""
        return self.seen >= self.min_seen and self.skipped > self.max_fraction * self.seen

    def check(self) -> None:
        """Raise :class:`TooManyBrokenFilesError` naming examples when the budget is spent."""
        if not self.exceeded():
            return
        examples = "\n  ".join(self.examples) or "(see the warnings above)"
        raise TooManyBrokenFilesError(
            f"{self.skipped} of {self.seen} training samples so far could not be read (more than "
            f"{self.max_fraction:.1%}). Examples:\n  {examples}\n"
            "Fix or remove these files (tools/check_data.py lists them all), or raise "
            f"{self.what} if this is expected."
        )

    def state_dict(self) -> dict:
        """Job-wide totals (call :meth:`sync` first under DDP); weights_only-loadable."""
        return {"seen": self.seen, "skipped": self.skipped, "examples": list(self.examples)}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint's totals; a missing or empty state starts from zero."""
        self._base = (int(state.get("seen", 0)), int(state.get("skipped", 0)))
        self._local = [0, 0]
        self.seen, self.skipped = self._base
        self.examples = list(state.get("examples", []))[: self.keep_examples]
        self._synced_examples = self.skipped
