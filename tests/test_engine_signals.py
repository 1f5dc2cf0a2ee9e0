"""SIGTERM / SIGUSR1 (issue 11 case 10): the handler only sets a flag, old handlers come back, a
run stops at a step boundary with a checkpoint and the requeue exit code; under DDP every rank
stops at the same step and the skip budget is summed over ranks.

The file doubles as the subprocess / torchrun worker (``--worker KIND OUT``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.guards import REQUEUE_EXIT_CODE, StopRequest, should_stop, stop_on_signals

REPO = Path(__file__).resolve().parents[1]


def test_handler_sets_the_flag_and_restores_old_handlers() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    with stop_on_signals() as stop:
        assert not stop and not should_stop(stop)
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(100):  # the handler runs between bytecodes of the main thread
            if stop:
                break
            time.sleep(0.01)
        assert stop and stop.name == "SIGUSR1" and should_stop(stop)
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal keeps the first one's name
        time.sleep(0.05)
        assert stop.signum == signal.SIGUSR1
    assert {s: signal.getsignal(s) for s in before} == before
    assert not StopRequest()


def _signal_worker(out: Path) -> None:
    """A fake training loop that sends itself SIGTERM at step 3 and must stop after that step."""
    from engine.checkpoint import CheckpointManager, find_resume_checkpoint

    manager = CheckpointManager(out)
    step = 0
    with stop_on_signals() as stop:
        while step < 100:
            step += 1  # one "optimizer step"
            if step == 3:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the flag is set asynchronously, in the middle of a step
            if should_stop(stop):
                manager.save({"step": step, "w": torch.ones(1)}, step)
                (out / "stopped.json").write_text(json.dumps({"step": step, "signal": stop.name}))
                sys.exit(REQUEUE_EXIT_CODE)
    assert find_resume_checkpoint("auto", out) is None


@pytest.mark.slow
def test_sigterm_in_a_subprocess_checkpoints_and_exits_for_requeue(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, __file__, "--worker", "signal", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == REQUEUE_EXIT_CODE, proc.stderr
    assert json.loads((tmp_path / "stopped.json").read_text()) == {"step": 3, "signal": "SIGTERM"}
    from engine.checkpoint import find_resume_checkpoint, load_checkpoint

    assert load_checkpoint(find_resume_checkpoint("auto", tmp_path))["step"] == 3


def _ddp_worker(out: Path) -> None:
    """Rank 1 alone gets a stop request at step 2; both ranks must stop there. Each rank skips
    a different number of files; the budget must see the job-wide sum."""
    from engine.distributed import cleanup_distributed, get_rank, init_distributed
    from engine.skips import SkipBudget

    init_distributed("cpu")
    rank = get_rank()
    stop = StopRequest()
    budget = SkipBudget(max_fraction=0.5, min_seen=1)
    stopped_at = None
    for step in range(1, 6):
        budget.update(skipped=rank + 1, seen=10, files=[f"rank{rank}_step{step}.jpg"])
        budget.sync("cpu")
        if rank == 1 and step == 2:
            stop.set(signal.SIGTERM)
        if should_stop(stop, "cpu"):
            stopped_at = step
            break
    (out / f"rank{rank}.json").write_text(json.dumps(
        {"stopped_at": stopped_at, "seen": budget.seen, "skipped": budget.skipped, "examples": budget.examples}))
    cleanup_distributed()


@pytest.mark.slow
def test_ddp_ranks_stop_at_the_same_step_and_sum_skips(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, "--worker", "ddp", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["stopped_at"] for r in results] == [2, 2]
    for r in results:  # 2 steps x 10 seen x 2 ranks; skipped (1 + 2) per step
        assert (r["seen"], r["skipped"]) == (40, 6)
        assert {"rank0_step1.jpg", "rank1_step1.jpg"} <= set(r["examples"])


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--worker":
    {"signal": _signal_worker, "ddp": _ddp_worker}[sys.argv[2]](Path(sys.argv[3]))
