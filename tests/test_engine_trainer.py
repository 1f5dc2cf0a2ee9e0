"""The shared trainer on a toy task (linear regression, no real model): run folders, exact resume,
stop signals, the skip budget, metrics logs and the result schema."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from engine.config import ConfigError, OptimConfig, RunConfig
from engine.guards import REQUEUE_EXIT_CODE
from engine.sampler import ResumableSampler
from engine.schedules import schedule_from_config
from engine.skips import TooManyBrokenFilesError
from engine.trainer import RESULT_FILE, RunContext, Task, TrainSetup, fit

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class ToyConfig:
    steps: int = 12
    broken_every: int = 0  # every k-th sample is "unreadable" (0: none)
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(lr=0.05, schedule="cosine"))
    run: RunConfig = dataclasses.field(default_factory=lambda: RunConfig(log_every=1, ckpt_every_steps=4))


class ToyData(Dataset):
    """y = x . w* + noise; a sample's noise depends only on its index (as the real datasets' augmentation)."""

    def __init__(self, n: int = 32, broken_every: int = 0) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
        self.broken_every = broken_every

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        broken = self.broken_every and i % self.broken_every == 0
        return {"x": self.x[i], "y": self.y[i], "skipped": int(bool(broken)), "file": f"img_{i}.jpg"}


def collate(items: list[dict]) -> dict:
    return {
        "x": torch.stack([it["x"] for it in items]),
        "y": torch.stack([it["y"] for it in items]),
        "skipped": sum(it["skipped"] for it in items),
        "skipped_files": [it["file"] for it in items if it["skipped"]],
    }


class ToyTask(Task):
    name = "toy"
    best_metric = "score"
    run_length_keys = ("steps",)

    def __init__(self, cfg: ToyConfig) -> None:
        self.cfg = cfg
        self.evaluations: list[int] = []

    def build(self, ctx: RunContext) -> TrainSetup:
        torch.manual_seed(self.cfg.run.seed)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 1))
        data = ToyData(broken_every=self.cfg.broken_every)
        sampler = ResumableSampler(len(data), shuffle=True, seed=self.cfg.run.seed)
        return TrainSetup(
            config=self.cfg, model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=0.05),
            dataset=data, sampler=sampler, collate_fn=collate, batch_size=4, total_steps=self.cfg.steps,
            steps_per_epoch=8, schedule=schedule_from_config(self.cfg.optim, self.cfg.steps), base_lr=0.05,
            accum_iter=1, max_skipped_fraction=0.2, min_seen=8,
        )  # fmt: skip

    def step(self, model, batch, ctx):
        loss = torch.nn.functional.mse_loss(model(batch["x"]).squeeze(1), batch["y"])
        return {"loss": loss, "loss_copy": loss * 2}

    def evaluate_at(self, step: int) -> bool:
        return step % 6 == 0

    def evaluate(self, model, ctx, tag):
        self.evaluations.append(len(self.evaluations))
        with torch.no_grad():
            d = ToyData()
            err = torch.nn.functional.mse_loss(model(d.x).squeeze(1), d.y).item()
        return {"score": -err}


def _cfg(out: Path, **run) -> ToyConfig:
    return ToyConfig(run=RunConfig(output_dir=str(out), log_every=1, ckpt_every_steps=4, device="cpu", **run))


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r}


def test_result_schema_files_and_logged_means(tmp_path: Path) -> None:
    result = fit(ToyTask(_cfg(tmp_path / "a")), _cfg(tmp_path / "a"))
    saved = json.loads((tmp_path / "a" / RESULT_FILE).read_text())
    for key in ("task", "step", "total_steps", "epochs", "run_dir", "checkpoint", "best_checkpoint", "best_score",
                "best_step", "skipped_images", "wall_time_s", "score"):
        assert key in result and key in saved, key
    assert result["step"] == 12 and result["epochs"] == 2 and result["task"] == "toy"
    losses = _losses(tmp_path / "a")
    assert sorted(losses) == list(range(1, 13))
    records = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_copy"] == pytest.approx(2 * r["loss"]) for r in records if "loss" in r)
    assert [r["step"] for r in records if "val/score" in r] == [6, 12]  # every 6 steps, the last once
    best = torch.load(tmp_path / "a" / "best.pth", weights_only=True)
    assert best["best"]["score"] == pytest.approx(result["best_score"]) and best["step"] == result["best_step"]


def test_reused_folder_is_refused_and_overwrite_says_what_it_deletes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    fit(ToyTask(_cfg(out)), _cfg(out))
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match=r"already holds a run.*--resume auto.*--overwrite"):
        fit(ToyTask(_cfg(out)), _cfg(out))
    assert (out / "metrics.jsonl").read_text() == before  # nothing touched
    capsys.readouterr()
    fit(ToyTask(_cfg(out, overwrite=True)), _cfg(out, overwrite=True))
    said = capsys.readouterr().out
    assert "--overwrite: deleting" in said and "checkpoint_00000012.pth" in said
    assert sorted(_losses(out)) == list(range(1, 13))  # one run's log, not two


def test_resume_refuses_another_config_but_allows_a_longer_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    fit(ToyTask(_cfg(out)), _cfg(out))
    other = dataclasses.replace(_cfg(out, resume="auto", seed=5))
    with pytest.raises(ConfigError, match=r"run.seed: checkpoint 0, requested 5"):
        fit(ToyTask(other), other)
    longer = dataclasses.replace(_cfg(out, resume="auto"), steps=16)
    assert fit(ToyTask(longer), longer)["step"] == 16


def test_resume_is_exact_and_the_log_is_truncated_to_the_checkpoint(tmp_path: Path) -> None:
    full = fit(ToyTask(_cfg(tmp_path / "full")), _cfg(tmp_path / "full"))
    part = tmp_path / "part"
    fit(ToyTask(_cfg(part)), _cfg(part))
    # Pretend the run died after step 10: its log has steps 9-12 the step-8 checkpoint does not know.
    for p in part.glob("checkpoint_0000001*.pth"):
        p.unlink()
    (part / "last.pth").unlink()
    resumed = fit(ToyTask(_cfg(part, resume="auto")), _cfg(part, resume="auto"))
    assert resumed["step"] == 12
    assert _losses(part) == _losses(tmp_path / "full")  # each step once, same values
    a = torch.load(full["checkpoint"], weights_only=True)["model"]
    b = torch.load(resumed["checkpoint"], weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_skip_budget_stops_the_run_and_counts_across_steps(tmp_path: Path) -> None:
    ok = dataclasses.replace(_cfg(tmp_path / "ok"), broken_every=8)  # 1 in 8: under the 20% budget
    result = fit(ToyTask(ok), ok)
    sampler = ResumableSampler(32, shuffle=True, seed=0)
    order = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        order += sampler.epoch_indices()
    expected = sum(1 for i in order[: 12 * 4] if i % 8 == 0)  # the samples the 12 steps read
    assert result["skipped_images"] == expected > 0
    state = torch.load(tmp_path / "ok" / "last.pth", weights_only=True)
    assert state["skips"]["skipped"] == result["skipped_images"]
    assert state["skips"]["seen"] == 12 * 4 + result["skipped_images"]
    bad = dataclasses.replace(_cfg(tmp_path / "bad"), broken_every=2)  # half: over the budget
    with pytest.raises(TooManyBrokenFilesError, match=r"(?s)could not be read.*img_"):
        fit(ToyTask(bad), bad)
    stopped = torch.load(tmp_path / "bad" / "last.pth", weights_only=True)  # the work so far is kept
    assert stopped["step"] >= 1 and stopped["skips"]["skipped"] > 0.2 * stopped["skips"]["seen"]


SIGNAL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_engine_trainer import ToyTask, _cfg
from engine.trainer import fit
from pathlib import Path

class Signalled(ToyTask):
    def step(self, model, batch, ctx):
        if not hasattr(self, "n"):
            self.n = 0
        self.n += 1
        if self.n == 3 and {send!r}:
            os.kill(os.getpid(), signal.SIGTERM)  # what SLURM sends before preemption
        return super().step(model, batch, ctx)

cfg = _cfg(Path({out!r}), resume={resume!r})
fit(Signalled(cfg), cfg)
"""


def _run_signalled(out: Path, send: bool, resume: str | None) -> subprocess.CompletedProcess:
    script = SIGNAL_SCRIPT.format(tests=str(REPO / "tests"), out=str(out), send=send, resume=resume)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=env)


def test_sigterm_writes_a_resumable_checkpoint_and_exits_for_requeue(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = _run_signalled(out, send=True, resume=None)
    assert first.returncode == REQUEUE_EXIT_CODE, first.stderr[-2000:]
    state = torch.load(out / "last.pth", weights_only=True)
    assert state["step"] == 3  # the step that was running when the signal came, then a checkpoint
    again = _run_signalled(out, send=False, resume="auto")
    assert again.returncode == 0, again.stderr[-2000:]
    reference = fit(ToyTask(_cfg(tmp_path / "ref")), _cfg(tmp_path / "ref"))
    assert _losses(out) == _losses(tmp_path / "ref")
    a = torch.load(out / "last.pth", weights_only=True)["model"]
    b = torch.load(reference["checkpoint"], weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are restored


class EpochData(ToyData):
    """ToyData whose sample also says which epoch's augmentation it got and which process made it."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict:
        return {**super().__getitem__(i), "index": i, "epoch": self.epoch, "pid": os.getpid()}


class EpochTask(ToyTask):
    """Three epochs of 8 steps; records each batch's indices, epochs and worker pids."""

    def __init__(self, cfg: ToyConfig, workers: int) -> None:
        super().__init__(cfg)
        self.workers, self.seen = workers, []

    def build(self, ctx: RunContext) -> TrainSetup:
        setup = super().build(ctx)

        def collate_tags(items: list[dict]) -> dict:
            tags = {k: [it[k] for it in items] for k in ("index", "epoch", "pid")}
            return {**collate(items), **tags}

        return dataclasses.replace(setup, dataset=EpochData(), collate_fn=collate_tags, num_workers=self.workers)

    def step(self, model, batch, ctx):
        self.seen.append((batch["index"], batch["epoch"], batch["pid"]))
        return super().step(model, batch, ctx)


def test_persistent_workers_follow_the_epoch_and_give_the_in_process_batches(tmp_path: Path) -> None:
    runs = {}
    for workers in (0, 2):
        cfg = dataclasses.replace(_cfg(tmp_path / f"w{workers}"), steps=24)
        task = EpochTask(cfg, workers)
        fit(task, cfg)
        runs[workers] = task.seen
    (inline, pooled) = runs[0], runs[2]
    assert [s[0] for s in pooled] == [s[0] for s in inline]  # the same samples, batch by batch
    for step, (_, epochs, _) in enumerate(pooled):
        assert epochs == [step // 8] * 4  # every worker saw the epoch the main process is in
    assert {p for _, _, pids in inline for p in pids} == {os.getpid()}
    pids_per_epoch = [{p for _, _, pids in pooled[e * 8 : (e + 1) * 8] for p in pids} for e in range(3)]
    assert len(pids_per_epoch[0]) == 2 and os.getpid() not in pids_per_epoch[0]
    assert pids_per_epoch[1] == pids_per_epoch[0] == pids_per_epoch[2]  # the same two workers all run
    assert _losses(tmp_path / "w0") == pytest.approx(_losses(tmp_path / "w2"), abs=1e-6)
