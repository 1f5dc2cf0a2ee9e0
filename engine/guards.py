"""Stop cleanly, with a checkpoint and advice: when the loss stops being finite, on Ctrl-C, and
when the scheduler asks (SIGTERM / SIGUSR1, what SLURM sends before preemption or the time limit).

Signals, at a step boundary::

    with stop_on_signals() as stop:                     # the handler only sets a flag
        for batch in loader:
            ...one optimizer step...
            if should_stop(stop, device):               # same verdict on every rank (all-reduce MAX)
                ckpt.save(state(), step)
                sys.exit(REQUEUE_EXIT_CODE)             # the job script requeues; --resume auto continues
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "NonFiniteLossError",
    "check_finite",
    "REQUEUE_EXIT_CODE",
    "STOP_SIGNALS",
    "StopRequest",
    "stop_on_signals",
    "should_stop",
]

# Exit status of a run stopped by a signal after writing its checkpoint: 75 is EX_TEMPFAIL of
# sysexits.h ("temporary failure, try again"). A SLURM job script requeues on it, e.g.
#   python tools/train_seg.py ... --resume auto; [ $? -eq 75 ] && scontrol requeue "$SLURM_JOB_ID"
# (or the cluster lists it in slurm.conf's RequeueExit=75). Other exits are real failures.
REQUEUE_EXIT_CODE = 75
# SIGTERM: sent at preemption / scancel / the time limit; SIGUSR1: what `sbatch --signal=USR1@120`
# sends some minutes before the limit.
STOP_SIGNALS: tuple[int, ...] = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s)

_log = logging.getLogger("target_ssl")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""

    def __init__(self, message: str, step: int, value: float) -> None:
        super().__init__(message)
        self.step = step
        self.value = value


def _as_float(x: torch.Tensor | float) -> float:
    if isinstance(x, torch.Tensor):
        return float(x.detach().float().sum().item()) if x.numel() != 1 else float(x.detach().item())
    return float(x)


def check_finite(
    loss: torch.Tensor | float,
    step: int,
    on_fail: Callable[[], Any] | None = None,
    components: Mapping[str, torch.Tensor | float] | None = None,
) -> None:
    """Raise :class:`NonFiniteLossError` if ``loss`` is NaN/inf, after calling ``on_fail()``.

    Args:
        loss: the scalar training loss (reading it synchronises with the GPU; loops usually do
            that anyway to log it).
        step: the optimizer step, for the message.
        on_fail: e.g. ``lambda: ckpt.save_named(state(), "nonfinite")``; whatever it returns (a
            path) is quoted in the message. If it raises, that is reported and the loss error is
            still raised.
        components: optional named loss terms; the non-finite ones are named in the message.
    """
    value = _as_float(loss)
    if math.isfinite(value):
        return
    saved = ""
    if on_fail is not None:
        try:
            result = on_fail()
            if result is not None:
                saved = f" State saved to {result}."
        except Exception as e:  # the loss error is the one to surface
            _log.error("on_fail callback failed while handling a non-finite loss: %r", e)
            saved = f" (Saving state failed: {type(e).__name__}: {e}.)"
    bad = ""
    if components:
        names = [k for k, v in components.items() if not math.isfinite(_as_float(v))]
        if names:
            bad = f" Non-finite terms: {', '.join(names)}."
    raise NonFiniteLossError(
        f"loss is {value} at step {step}.{bad}{saved} Things to try: lower the learning rate or "
        "lengthen the warmup (--set optim.lr=... optim.warmup_steps=...); enable gradient clipping "
        "(optim.clip_grad=1.0); train in fp32 (run.precision=fp32), since fp16 overflows easily; "
        "check the data for corrupt images or degenerate targets (empty / zero-size boxes).",
        step=step,
        value=value,
    )


class StopRequest:
    """A flag set by a signal handler; read it (``bool(stop)``) at a step boundary.

    Attributes:
        signum: the signal that arrived (the first one), or None.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def set(self, signum: int) -> None:
        if self.signum is None:
            self.signum = int(signum)

    def __bool__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


@contextlib.contextmanager
def stop_on_signals(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[StopRequest]:
    """Inside the block, ``signals`` only set the yielded :class:`StopRequest` (no I/O, no
    collectives in the handler: a rank that alone got the signal must not block in an all-reduce
    the others never join). The previous handlers come back on exit.

    Outside the main thread (where Python cannot install handlers) the request is never set.
    """
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        _log.warning("stop_on_signals: not the main thread, signals are not intercepted")
        yield stop
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        if signum == getattr(signal, "SIGINT", None) and stop:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
        stop.set(signum)

    previous = {s: signal.getsignal(s) for s in signals}
    for s in signals:
        signal.signal(s, handler)
    try:
        yield stop
    finally:
        for s, old in previous.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)
        if stop:
            _log.warning("received %s: stopping at a step boundary", stop.name)


def should_stop(flag: StopRequest | bool, device: torch.device | str = "cpu") -> bool:
    """``bool(flag)`` of any rank, on every rank: a MAX all-reduce under DDP (call it on every rank
    at the same step; ``device`` must suit the backend, the GPU under NCCL), so all ranks stop
    at the same step even when only some got the signal."""
    local = bool(flag)
    if not (dist.is_available() and dist.is_initialized()):
        return local
    t = torch.tensor([1 if local else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
