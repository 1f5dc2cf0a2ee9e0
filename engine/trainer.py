"""One training loop for every task: pretraining, detection, segmentation, and whatever comes next.

A task supplies only what differs between tasks (see :class:`Task`): it builds its model, data and
optimizer into a :class:`TrainSetup`, turns one batch into a dict of losses in :meth:`Task.step`,
and optionally evaluates and finishes (e.g. exports the encoder). The :class:`Trainer` owns the
rest, the same for every task:

- distributed setup (one process, or many under torchrun), seeding, precision (autocast, grad
  scaler), DDP wrapping and buffer broadcast before evaluation; or, with ``run.parallel="fsdp"``,
  FSDP2 sharding per transformer block with sharded (DCP) checkpoints (:mod:`engine.sharding`,
  :mod:`engine.sharded_checkpoint`); per-block activation checkpointing and ``torch.compile``;
- the step: LR schedule, gradient accumulation (DDP ``no_sync`` on all but the last micro-batch),
  clipping, the finite-loss guard (stops with ``nonfinite.pth`` and advice);
- one skip budget for unreadable samples, checked every step across processes and saved in
  checkpoints;
- logging: a progress bar, window means every ``run.log_every`` steps to ``metrics.jsonl`` and
  TensorBoard, a console line;
- checkpoints every ``run.ckpt_every_steps``, after each evaluation and at the end (``best.pth``
  by the task's ``best_metric``); exact resume of model, optimizer, scaler, data position, every
  rank's RNG, the skip counts, the best score and the task's own state;
- stop requests (Ctrl-C, SIGTERM, SIGUSR1): a resumable checkpoint at the next step boundary, then
  :class:`RunInterrupted` (tools exit with ``REQUEUE_EXIT_CODE``);
- one result schema, written to ``final_metrics.json``.

The data position is a function of the step: step s is micro-batch ``(s % steps_per_epoch) *
accum_iter`` of epoch ``s // steps_per_epoch``, and the order and each sample's augmentation
depend only on (seed, epoch, index), so a resumed run continues as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from engine.checkpoint import CheckpointManager, capture_rng_state, load_checkpoint, restore_rng_state
from engine.config import config_to_dict, save_config
from engine.distributed import (
    DistInfo,
    all_gather_object,
    all_reduce_mean,
    barrier,
    broadcast_buffers,
    init_distributed,
    seed_everything,
    unwrap_model,
    wrap_ddp,
)
from engine.guards import REQUEUE_EXIT_CODE, STOP_SIGNALS, check_finite, should_stop, stop_on_signals
from engine.logging import MetricLogger, ThroughputMeter, format_seconds, json_safe, progress, setup_logging
from engine.optim import clip_grad
from engine.precision import autocast, make_grad_scaler, resolve_precision
from engine.run_dir import RESUME_IGNORED_KEYS, prepare_run_dir
from engine.sampler import EpochTaggedDataset, EpochTaggedSampler, ResumableSampler
from engine.schedules import LRSchedule, set_lr
from engine.sharded_checkpoint import load_full, load_sharded, sharded_model_state
from engine.sharding import (
    check_fsdp_run,
    checkpoint_blocks,
    compile_blocks,
    full_replica,
    is_sharded,
    meta_replica,
    no_grad_sync,
    rebind_optimizer,
    shard_model,
    transformer_blocks,
    unsharded,
)
from engine.skips import SkipBudget

__all__ = ["RunContext", "TrainSetup", "Task", "Trainer", "RunInterrupted", "fit", "open_run", "RESULT_FILE"]

_log = logging.getLogger("target_ssl")

RESULT_FILE = "final_metrics.json"


class RunInterrupted(SystemExit):
    """A stop request (Ctrl-C, SIGTERM, SIGUSR1) ended the run after a resumable checkpoint."""

    def __init__(self, message: str, checkpoint: Path | None) -> None:
        super().__init__(REQUEUE_EXIT_CODE)
        self.message = message
        self.checkpoint = checkpoint

    def __str__(self) -> str:
        return self.message


@dataclasses.dataclass
class RunContext:
    """What every task may read: the process, device, precision, run folder and resume state.

    ``resume_state`` is the loaded checkpoint a run continues from (None for a fresh run): tasks
    read their own entries from it while building (e.g. a tokenizer vocabulary), the trainer
    restores the rest.
    """

    info: DistInfo
    precision: str
    run_dir: Path
    run: Any  # engine.config.RunConfig
    resume_path: Path | None = None
    resume_state: dict | None = None

    @property
    def device(self) -> torch.device:
        return self.info.device


@dataclasses.dataclass
class TrainSetup:
    """What a task hands the trainer.

    Args:
        config: the resolved config (derived values filled in): saved as config.json / config.py
            and stored in every checkpoint.
        model: the task's module on the device, not wrapped (the trainer wraps it for DDP).
        optimizer: over ``model``'s parameters; its groups' ``lr_scale`` keep layer decay.
        dataset: the training set; ``set_epoch(epoch)`` is called before each epoch if it exists.
        sampler: a :class:`ResumableSampler` over ``dataset`` (same seed on every rank).
        collate_fn: builds a batch dict; ``batch["skipped"]`` / ``batch["skipped_files"]`` count
            the unreadable samples it replaced (0 / [] when absent).
        batch_size: samples per process per micro-batch.
        total_steps: optimizer updates of the whole run; ``steps_per_epoch`` updates per epoch.
        schedule: LR multiplier per step; ``base_lr`` is what it multiplies.
        accum_iter: micro-batches per update.
        clip_grad: max global grad norm (None: only measured and logged).
        max_skipped_fraction: stop when more than this share of the samples read were
            unreadable, once ``min_seen`` samples were read (job-wide).
        stop_at_step: halt with a checkpoint after this many updates (schedule unchanged).
        ddp_kwargs: extra arguments to DistributedDataParallel.
    """

    config: Any
    model: nn.Module
    optimizer: torch.optim.Optimizer
    dataset: Dataset
    sampler: ResumableSampler
    collate_fn: Callable[[list], dict]
    batch_size: int
    total_steps: int
    steps_per_epoch: int
    schedule: LRSchedule
    base_lr: float
    accum_iter: int = 1
    num_workers: int = 0
    worker_init_fn: Callable[[int], None] | None = None
    clip_grad: float | None = None
    max_skipped_fraction: float = 0.01
    min_seen: int = 200
    stop_at_step: int | None = None
    ddp_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


class Task:
    """What a training task supplies; override :meth:`build` and :meth:`step`, the rest as needed.

    ``name`` names the task in logs and results; ``best_metric`` (higher is better) selects
    ``best.pth`` among evaluations; ``run_length_keys`` are the dotted config keys a resumed run
    may change (the run length), every other difference is refused.
    """

    name: str = "task"
    best_metric: str | None = None
    run_length_keys: tuple[str, ...] = ()

    def build(self, ctx: RunContext) -> TrainSetup:
        raise NotImplementedError

    def step(self, model: nn.Module, batch: dict, ctx: RunContext) -> dict[str, torch.Tensor]:
        """Losses of one micro-batch (run under autocast); ``"loss"`` is what is minimised, other
        0-dim entries are logged as their means."""
        raise NotImplementedError

    def before_update(self, model: nn.Module, step: int) -> None:
        """After the backward pass of update ``step`` (grads unscaled), before clipping and the
        optimizer step: e.g. zero some gradients (DINO freezes its last layer at first)."""

    def after_update(self, model: nn.Module, step: int) -> None:
        """After the optimizer step of update ``step`` (0-based): e.g. an EMA teacher, or a
        weight-decay schedule applied to the optimizer's groups."""

    def evaluate_at(self, step: int) -> bool:
        """Whether to evaluate after ``step`` (the last step is always evaluated)."""
        return False

    def evaluate(self, model: nn.Module, ctx: RunContext, tag: str) -> dict[str, Any] | None:
        """Metrics of ``model`` (unwrapped; every rank calls this); None: the task has none."""
        return None

    def meta(self) -> dict[str, Any]:
        """Descriptive entries stored as the checkpoints' ``"meta"``."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The task's own resumable state (beyond model, optimizer and data position)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def on_end(self, model: nn.Module, ctx: RunContext, finished: bool) -> dict[str, Any]:
        """Called on every rank after the last step; returns extra result entries."""
        return {}


def open_run(run: Any, *, create: bool = True) -> RunContext:
    """Distributed setup, precision and logging for a run (training or evaluation alone)."""
    info = init_distributed(run.device)
    run_dir = Path(run.output_dir)
    setup_logging(run_dir if create else None)
    precision = resolve_precision(run.precision, info.device)
    return RunContext(info=info, precision=precision, run_dir=run_dir, run=run)


class Trainer:
    """Runs a :class:`Task` with the ``run`` section of its config (see the module docstring)."""

    def __init__(self, task: Task, config: Any) -> None:
        self.task = task
        self.config = config
        self.run = config.run
        self.step = 0
        self.best: dict[str, Any] = {"value": -math.inf, "step": -1}
        self.metrics: dict[str, Any] = {}
        self.last_eval_step = -1
        self.checkpoint_path: Path | None = None
        self.requested = config_to_dict(config)  # what a resume is compared with
        self.last_loss = math.nan
        self._data_loader: DataLoader | None = None  # made on the first epoch (`_loader`)

    # ---------------------------------------------------------------- set-up and resume
    def _setup(self) -> None:
        ctx = open_run(self.run, create=False)
        self.ctx = ctx
        self.fsdp = getattr(self.run, "parallel", "ddp") == "fsdp"
        if self.fsdp:
            check_fsdp_run(ctx.precision)
        seed_everything(self.run.seed, ctx.info.rank)
        # The folder policy and the resume config check, before anything is built or written.
        ignore = (*RESUME_IGNORED_KEYS, "data.num_workers", *self.task.run_length_keys)
        ctx.resume_path = prepare_run_dir(ctx.run_dir, self.run.resume, self.run.overwrite, self.requested,
                                          ignore=ignore, allow_pickle=self.run.allow_pickle)
        # Every rank has checked the folder before rank 0 writes into it (config.json, log.txt):
        # a slower rank would otherwise find rank 0's fresh files and refuse the run as a reused one.
        barrier()
        if ctx.resume_path is not None:
            ctx.resume_state = load_checkpoint(ctx.resume_path, allow_pickle=self.run.allow_pickle)
        self.s = s = self.task.build(ctx)  # checks the data
        self.config = s.config
        setup_logging(ctx.run_dir)  # the inputs are checked: now the folder may be written
        save_config(self.config, ctx.run_dir)
        self.scaler = make_grad_scaler(ctx.precision, ctx.device)
        self.skips = SkipBudget(s.max_skipped_fraction, s.min_seen)
        self.ckpt = CheckpointManager(ctx.run_dir, keep_last=self.run.keep_last, sharded=self.fsdp)
        self.stop_at = min(s.total_steps, s.stop_at_step or s.total_steps)
        state, ctx.resume_state = ctx.resume_state, None  # free the memory; tasks read it in build()
        # Weights and optimizer state load before wrapping from an ordinary file, after sharding
        # when either side is sharded (DCP reshards to any number of processes).
        late = state is not None and (self.fsdp or ctx.resume_path.is_dir())
        if state is not None:
            self._restore(state, weights=not late)
        self.model = self._wrap(s)
        if late:
            self._restore_weights(ctx.resume_path, state)
        if state is not None:
            restore_rng_state(state["rng"])  # last: after everything that draws random numbers
            _log.info("resumed from %s at step %d", ctx.resume_path, self.step)
        self.params = [p for p in s.model.parameters() if p.requires_grad]
        # A resumed run drops what its predecessor logged after the checkpoint (all of it when it
        # died before its first one).
        self.logger = MetricLogger(ctx.run_dir, resume_step=self.step if self.run.resume else None)

    def _wrap(self, s: TrainSetup) -> nn.Module:
        """DDP (or nothing) or FSDP around the task's model, after the run's per-block options."""
        run, blocks = self.run, transformer_blocks(s.model)
        ac, compiled = getattr(run, "activation_checkpointing", False), getattr(run, "compile", False)
        if (ac or compiled) and not blocks:
            _log.warning("run.activation_checkpointing / run.compile: %s has no transformer blocks; ignored",
                         type(s.model).__name__)  # fmt: skip
        if self.fsdp:
            self.replica = meta_replica(s.model)  # no memory; filled at the end for the task's export
        if ac:
            checkpoint_blocks(blocks)
        if compiled:
            compile_blocks(blocks)
        if not self.fsdp:
            return wrap_ddp(s.model, self.ctx.info, **s.ddp_kwargs)
        names = {id(p): n for n, p in s.model.named_parameters()}
        model = shard_model(s.model, self.ctx.info, self.ctx.precision)
        rebind_optimizer(s.optimizer, names, model)
        return model

    def _restore_weights(self, path: Path, state: dict) -> None:
        core = unwrap_model(self.model)
        if path.is_dir():
            load_sharded(path, core, self.s.optimizer)
        else:
            load_full(state, core, self.s.optimizer)

    def _restore(self, state: dict, weights: bool = True) -> None:
        """Everything but the RNG (restored last, by the caller); ``weights``: also model and optimizer."""
        s = self.s
        if weights:
            s.model.load_state_dict(state["model"])
            s.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        s.sampler.load_state_dict(state["sampler"])  # refuses another seed / dataset / world size
        self.skips.load_state_dict(state.get("skips", {}))
        self.best = dict(state.get("best", self.best))
        self.task.load_state_dict(state.get("task", {}))
        self.step = int(state["step"])

    def state(self) -> dict[str, Any]:
        """The checkpoint of now. Every rank calls it at the same points (the RNG gather is a
        collective)."""
        s = self.s
        epoch, in_epoch = divmod(self.step, s.steps_per_epoch)
        s.sampler.set_epoch(epoch)
        if self.fsdp:  # DCP state dicts of every rank's shards (and the buffers), by name
            weights = sharded_model_state(unwrap_model(self.model), s.optimizer)
        else:
            weights = {"model": s.model.state_dict(), "optimizer": s.optimizer.state_dict()}
        return {
            **weights,
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": epoch,
            "rng": all_gather_object(capture_rng_state()),
            "sampler": s.sampler.state_dict(in_epoch * s.accum_iter, s.batch_size),
            "skips": self.skips.state_dict(),
            "best": self.best,
            "task": self.task.state_dict(),
            "config": config_to_dict(self.config),
            "requested_config": self.requested,
            "meta": self.task.meta(),
        }

    # ---------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        """Train to the end (or ``stop_at_step``); returns the result (see :meth:`_result`)."""
        start = time.perf_counter()
        self._setup()
        s, info = self.s, self.ctx.info
        _log.info(
            "%s: %d steps (%d per epoch), %d processes x %d samples x %d accumulation, lr %.3g, %s on %s",
            self.task.name, s.total_steps, s.steps_per_epoch, info.world_size, s.batch_size, s.accum_iter,
            s.base_lr, self.ctx.precision, self.ctx.device,
        )  # fmt: skip
        self.meter = ThroughputMeter()
        self.bar = progress(total=s.total_steps, initial=self.step, desc=self.task.name)
        self.window: dict[str, float] = {}
        self.window_steps = 0
        self.model.train()
        try:
            with stop_on_signals((signal.SIGINT, *STOP_SIGNALS)) as stop:
                while self.step < self.stop_at:
                    self._run_epoch(stop)
            if self.step >= s.total_steps and self.last_eval_step != self.step:
                self._evaluate("final")
            self._save()
        finally:
            self.bar.close()
            self.logger.close()
            self._data_loader = None  # its persistent workers exit with it
        return self._finish(start)

    def _epoch_batches(self, epoch: int, in_epoch: int) -> Iterator[dict]:
        s = self.s
        s.sampler.set_epoch(epoch)
        s.sampler.set_start_batch(in_epoch * s.accum_iter, s.batch_size)
        if hasattr(s.dataset, "set_epoch"):
            s.dataset.set_epoch(epoch)
        loader = self._loader()
        if isinstance(loader.sampler, EpochTaggedSampler):
            loader.sampler.epoch = epoch
        return iter(loader)

    def _loader(self) -> DataLoader:
        """The run's one DataLoader. With workers they persist across epochs (no fork, import and
        prefetch start-up per epoch, which short epochs on small target sets pay every few steps),
        and the epoch reaches them inside the indices (`engine.sampler.EpochTaggedSampler`)."""
        if self._data_loader is None:
            s = self.s
            persistent = s.num_workers > 0
            dataset, sampler = s.dataset, s.sampler
            if persistent and hasattr(dataset, "set_epoch"):
                dataset, sampler = EpochTaggedDataset(dataset), EpochTaggedSampler(sampler)
            self._data_loader = DataLoader(
                dataset,
                batch_size=s.batch_size,
                sampler=sampler,
                num_workers=s.num_workers,
                collate_fn=s.collate_fn,
                pin_memory=self.ctx.device.type == "cuda",
                drop_last=True,
                generator=s.sampler.loader_generator,  # keeps the global RNG untouched
                worker_init_fn=s.worker_init_fn,
                persistent_workers=persistent,
            )
        return self._data_loader

    def _run_epoch(self, stop: Any) -> None:
        epoch, in_epoch = divmod(self.step, self.s.steps_per_epoch)
        batches = self._epoch_batches(epoch, in_epoch)
        for _ in range(in_epoch, self.s.steps_per_epoch):
            if self.step >= self.stop_at:
                break
            self._train_step(batches)
            self._after_step(stop)
        del batches

    def _train_step(self, batches: Iterator[dict]) -> None:
        s, ctx = self.s, self.ctx
        lr = set_lr(s.optimizer, s.base_lr, s.schedule(self.step))
        means: dict[str, float] = {}
        for micro in range(s.accum_iter):
            batch = next(batches)
            last = micro == s.accum_iter - 1
            with contextlib.nullcontext() if last else no_grad_sync(self.model):
                with autocast(ctx.precision, ctx.device):
                    losses = self.task.step(self.model, batch, ctx)
                values = self._reduce(losses, batch)
                check_finite(values["loss"], self.step, components=values,
                             on_fail=lambda: self.ckpt.save_named(self.state(), "nonfinite"))
                self.scaler.scale(losses["loss"] / s.accum_iter).backward()
            for k, v in values.items():
                means[k] = means.get(k, 0.0) + v / s.accum_iter
        self.scaler.unscale_(s.optimizer)
        core = unwrap_model(self.model)
        self.task.before_update(core, self.step)
        grad_norm = float(clip_grad(self.params, s.clip_grad))
        self.scaler.step(s.optimizer)
        self.scaler.update()
        s.optimizer.zero_grad(set_to_none=True)
        self.task.after_update(core, self.step)
        self.step += 1
        self.meter.update(s.batch_size * s.accum_iter * ctx.info.world_size)
        for k, v in {**means, "grad_norm": grad_norm}.items():
            self.window[k] = self.window.get(k, 0.0) + v
        self.window_steps += 1
        self.lr, self.last_loss = lr, means["loss"]
        self.bar.update(1)
        self.bar.set_postfix(self.meter.postfix(self.step, s.total_steps, loss=means["loss"], lr=lr))

    def _reduce(self, losses: dict[str, torch.Tensor], batch: dict) -> dict[str, float]:
        """Means over processes of the logged values (one sync); counts the batch's skipped samples."""
        if "loss" not in losses:
            raise KeyError(f"{type(self.task).__name__}.step must return a 'loss' entry, got {sorted(losses)}")
        skipped = int(batch.get("skipped", 0))
        self.skips.update(skipped, self.s.batch_size + skipped, batch.get("skipped_files", []))
        keys = list(losses)
        local = torch.stack([losses[k].detach().float().reshape(()) for k in keys])
        return dict(zip(keys, all_reduce_mean(local).tolist()))

    def _after_step(self, stop: Any) -> None:
        step, s = self.step, self.s
        self.skips.sync(self.ctx.device)  # every step: a broken dataset stops early, on every rank
        if self.skips.exceeded():
            self._save()  # the work so far survives; the message says what to fix
            self.skips.check()
        if step % self.run.log_every == 0 or step == self.stop_at:
            self._log_window()
        evaluated = step < s.total_steps and self.task.evaluate_at(step) and self._evaluate(f"step_{step:08d}")
        if step < self.stop_at and (evaluated or step % self.run.ckpt_every_steps == 0):
            self._save()
        if step < self.stop_at and should_stop(stop, self.ctx.device):
            path = self._save()
            raise RunInterrupted(
                f"stopped at step {step} of {s.total_steps} on {stop.name or 'a signal to another process'}; "
                f"checkpoint {path}; continue with "
                f"--resume auto (exit code {REQUEUE_EXIT_CODE} asks a scheduler to requeue)",
                path,
            )

    def _log_window(self) -> None:
        metrics = {k: v / self.window_steps for k, v in self.window.items()}
        metrics.update(
            lr=self.lr,
            epoch=self.step / self.s.steps_per_epoch,
            images_per_s=self.meter.images_per_sec,
            skipped_images=self.skips.skipped,
        )
        self.logger.log(self.step, metrics)
        self.window, self.window_steps = {}, 0
        self.bar.clear()
        _log.info(
            "step %d/%d  loss %.4f  lr %.3e  %.1f img/s  eta %s",
            self.step, self.s.total_steps, metrics["loss"], self.lr, self.meter.images_per_sec,
            format_seconds(self.meter.eta_seconds(self.step, self.s.total_steps)),
        )  # fmt: skip

    def _evaluate(self, tag: str) -> bool:
        """Evaluate, log ``val/*``, keep ``best.pth``; False when the task has no evaluation."""
        core = unwrap_model(self.model)
        broadcast_buffers(core)  # every process runs rank 0's model (the one its checkpoints hold)
        self.bar.clear()
        with unsharded(core):  # FSDP: every rank holds the full weights, shards may differ in size
            metrics = self.task.evaluate(core, self.ctx, tag)
        core.train()
        if metrics is None:
            return False
        self.metrics, self.last_eval_step = metrics, self.step
        self.logger.log(self.step, {f"val/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
        key = self.task.best_metric
        value = metrics.get(key) if key else None
        if value is not None and math.isfinite(value) and value > self.best["value"]:
            self.best = {"value": float(value), "step": self.step, **{key: float(value)}}
            self.ckpt.save_named(self.state(), "best")
        return True

    def _save(self) -> Path:
        saved = self.ckpt.save(self.state(), self.step)  # None on ranks other than 0
        self.checkpoint_path = saved or self.ckpt.path_for(self.step)
        return self.checkpoint_path

    # ---------------------------------------------------------------- the end
    def _finish(self, start: float) -> dict[str, Any]:
        finished = self.step >= self.s.total_steps
        core = unwrap_model(self.model)
        if is_sharded(core):  # the task exports from rank 0: hand it the full model there
            core = full_replica(core, self.replica, self.ctx.info.is_main) or core
        extra = self.task.on_end(core, self.ctx, finished)
        if self.skips.skipped:
            _log.warning("%d unreadable samples were skipped and replaced (examples: %s)",
                         self.skips.skipped, ", ".join(self.skips.examples[:3]))
        if not finished:
            _log.info("stopped at step %d of %d (stop_at_step); continue with --resume auto",
                      self.step, self.s.total_steps)
        result = self._result(time.perf_counter() - start, extra)
        if self.ctx.info.is_main:
            (self.ctx.run_dir / RESULT_FILE).write_text(json.dumps(json_safe(result), indent=2) + "\n")
        barrier()
        return result

    def _result(self, seconds: float, extra: dict[str, Any]) -> dict[str, Any]:
        """The one result schema: the final evaluation's metrics, then the run's facts."""
        key = self.task.best_metric
        best_path = self.ckpt.path_named("best")
        result: dict[str, Any] = dict(self.metrics)
        if key:
            result[f"best_{key}"] = self.best.get(key, self.best["value"])
            result["best_step"] = self.best["step"]
        result.update(
            task=self.task.name,
            step=self.step,
            total_steps=self.s.total_steps,
            epochs=math.ceil(self.s.total_steps / self.s.steps_per_epoch),
            run_dir=str(self.ctx.run_dir),
            checkpoint=str(self.checkpoint_path),
            best_checkpoint=str(best_path) if key and self.best["step"] >= 0 else None,
            skipped_images=self.skips.skipped,
            final_loss=self.last_loss,
            wall_time_s=round(seconds, 1),
        )
        result.update(extra)
        return result


def fit(task: Task, config: Any) -> dict[str, Any]:
    """Train ``task`` with ``config`` (which has ``run`` and ``optim`` sections); see :class:`Trainer`."""
    return Trainer(task, config).fit()
