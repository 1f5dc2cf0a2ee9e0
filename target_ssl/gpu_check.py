"""The GPU check: every benchmark suite at its reference size plus a short real pretraining run, one JSON.

    python tools/benchmark.py all --device cuda                   # < 5 min on one H100 / H200
    python tools/benchmark.py all --device cpu --quick            # tiny sizes: the CI end-to-end test

Sections (each runs the existing suite's `run`; a failing section is recorded, the others still run):

* `pretrain`: SplitMask, BEiT, MAE, DINO at ViT-B, batch 64, 224 px: img/s, peak memory, GFLOP/step,
  MFU (fvcore FLOPs x3 for the backward / `engine.benchmarking.peak_tflops` by GPU name);
* `det`: Mask R-CNN ViT-B at 1024 px, 1 image per step, global and window attention: s/step, memory;
* `seg`: UperNet ViT-B at 512 px, 2 images per step: s/step, memory, MFU;
* `eval`: COCO evaluation pycocotools vs faster-coco-eval and batched sliding windows on the device;
* `data`: the data-pipeline suite, when `target_ssl.benchmark.SUITES` has one called "data" (its
  `GPU_CHECK_ARGS` / `QUICK_ARGS` module attributes choose its flags; without `QUICK_ARGS` it is
  skipped under `--quick`) -- HOOK: until that suite exists this section records "not available";
* `real_run`: the demo SplitMask ViT-tiny pretraining (`pretrain_configs/demo_splitmask_vit_tiny.py`)
  on the demo images for `--real-run-s` seconds (120): a timer sends SIGUSR1, the trainer stops at a
  step boundary with a checkpoint (the preemption path), and the logged images/s (loader + step) are
  reported beside the model-only figures above.

The JSON (`--out`, default benchmarks/all.json): `{"env", "args", "sections": {name: {"rows" | "result"
| "error", "seconds"}}, "total_s"}`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from engine.checkpoint import atomic_write
from engine.logging import json_safe

SECTIONS = ("pretrain", "det", "seg", "eval", "data", "real_run")

# Each suite's flags at the reference sizes, and tiny ones for --quick.
FULL_ARGS: dict[str, list[str]] = {
    "pretrain": ["--methods", "splitmask", "beit", "mae", "dino", "--archs", "vit_base", "--batch-size", "64"],
    "det": ["--archs", "vit_base", "--size", "1024", "--batch-size", "1", "--attention", "global", "window"],
    "seg": ["--archs", "vit_base", "--size", "512", "--batch-size", "2"],
    "eval": ["--images", "300", "--lvis-images", "0", "--seg-arch", "vit_base", "--seg-image", "512", "2048"],
}
QUICK_ARGS: dict[str, list[str]] = {
    "pretrain": ["--methods", "splitmask", "beit", "mae", "dino", "--archs", "vit_tiny", "--batch-size", "2",
                 "--img-size", "64", "--vocab-size", "64", "--local-crops", "2", "--dino-out-dim", "128"],
    "det": ["--archs", "vit_tiny", "--size", "64", "--batch-size", "1", "--boxes", "2", "--num-classes", "3",
            "--attention", "global", "window"],
    "seg": ["--archs", "vit_tiny", "--size", "64", "--batch-size", "2", "--num-classes", "5"],
    "eval": ["--images", "10", "--per-image", "10", "--classes", "5", "--lvis-images", "0", "--seg-arch", "vit_tiny",
             "--seg-image", "64", "64", "--batch-windows", "2"],
}
# The tiny real run: a 2-block, 64-wide encoder on 32 of the demo images at 64 px.
_QUICK_RUN = ["model.depth=2", "model.embed_dim=64", "model.num_heads=2", "data.img_size=64", "data.max_images=32",
              "schedule.batch_size=8", "data.num_workers=0", "tokenizer.vocab_size=64"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="tiny sizes (CPU, CI): every section in seconds")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    p.add_argument("--real-run-s", type=float, default=None, help="seconds of the real run (120; 3 with --quick)")
    p.add_argument("--workdir", default=None, help="run folder of the real run (default: next to --out)")


def _suite_namespace(module: Any, argv: list[str], args: argparse.Namespace, name: str) -> argparse.Namespace:
    """`module`'s own flags parsed from `argv`, with the common ones (device, ...) of this run."""
    p = argparse.ArgumentParser(prog=f"all:{name}")
    module.add_arguments(p)
    ns = p.parse_args(argv)
    out = Path(args.out).with_name(f"{Path(args.out).stem}_{name}.json")
    warmup, iters = (0, 1) if args.quick else (args.warmup, args.iters)
    for key, value in (("device", args.device), ("precision", args.precision), ("warmup", warmup),
                       ("iters", iters), ("out", str(out))):
        setattr(ns, key, value)
    return ns


def _suite_section(name: str, module: Any, args: argparse.Namespace) -> dict:
    if name == "data":  # HOOK: the data-pipeline suite chooses its own flags
        argv = getattr(module, "QUICK_ARGS" if args.quick else "GPU_CHECK_ARGS", None if args.quick else [])
        if argv is None:
            return {"skipped": "the data suite defines no QUICK_ARGS"}
    else:
        argv = (QUICK_ARGS if args.quick else FULL_ARGS)[name]
    rows = module.run(_suite_namespace(module, list(argv), args, name))
    return {"rows": rows}


def _metrics_summary(run_dir: Path) -> dict:
    """Images/s (loader + step, the trainer's window means; the first window left out when there are
    more: it holds the warm-up), steps and losses from `metrics.jsonl`."""
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines() if s.strip()]
    train = [m for m in lines if "images_per_s" in m]
    if not train:
        return {"logged_steps": 0}
    steady = train[1:] or train
    return {"logged_steps": len(train), "last_step": train[-1].get("step"),
            "images_per_s": sum(m["images_per_s"] for m in steady) / len(steady),
            "loss_first": train[0].get("loss"), "loss_last": train[-1].get("loss")}


@contextlib.contextmanager
def _stop_after(seconds: float, metrics: Path) -> Iterator[None]:
    """Send this process SIGUSR1 `seconds` from now, once the trainer's handler is installed (before
    that, e.g. while the data set is built, the signal would be caught by a placeholder and lost)
    and the run has logged a step to `metrics` (so a slow machine still measures something)."""
    placeholder = signal.signal(signal.SIGUSR1, lambda *_: None)
    ours = signal.getsignal(signal.SIGUSR1)
    done = threading.Event()

    def fire() -> None:
        if done.wait(seconds):
            return
        while not done.is_set():
            installed = signal.getsignal(signal.SIGUSR1) not in (ours, signal.SIG_DFL, signal.SIG_IGN, None)
            if installed and metrics.is_file() and metrics.stat().st_size > 0:
                os.kill(os.getpid(), signal.SIGUSR1)
                return
            done.wait(0.05)

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        signal.signal(signal.SIGUSR1, placeholder if placeholder is not None else signal.SIG_DFL)


def _real_run(args: argparse.Namespace) -> dict:
    """The demo pretraining for `--real-run-s` seconds, stopped by SIGUSR1 like a preempted job."""
    from engine.config import apply_overrides, load_config
    from engine.trainer import RunInterrupted
    from pretrain.loop import train

    seconds = args.real_run_s if args.real_run_s is not None else (3.0 if args.quick else 120.0)
    run_dir = Path(args.workdir or Path(args.out).with_name(f"{Path(args.out).stem}_real_run"))
    workers = 0 if args.quick else min(8, os.cpu_count() or 1)
    import pretrain_configs

    cfg = load_config("demo_splitmask_vit_tiny", search_dirs=[Path(pretrain_configs.__file__).parent])
    overrides = [f"run.output_dir={run_dir}", "run.overwrite=true", f"run.device={args.device}",
                 f"run.precision={args.precision}", "schedule.epochs=100000",
                 f"run.log_every={1 if args.quick else 5}",
                 f"data.num_workers={workers}"] + (_QUICK_RUN if args.quick else [])
    cfg = apply_overrides(cfg, overrides)
    start = time.perf_counter()
    stopped = False
    with _stop_after(seconds, run_dir / "metrics.jsonl"):
        try:
            train(cfg)
        except RunInterrupted:
            stopped = True
    return {"seconds": time.perf_counter() - start, "budget_s": seconds, "stopped_by_signal": stopped,
            "checkpoint": (run_dir / "last.pth").exists(), "run_dir": str(run_dir), **_metrics_summary(run_dir)}


def _environment() -> dict:
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["gpu_memory_GiB"] = torch.cuda.get_device_properties(0).total_memory / 2**30
    return env


def run(args: argparse.Namespace) -> dict:
    from target_ssl.benchmark import SUITES  # here: that module lists this one

    report: dict[str, Any] = {"env": _environment(), "args": {k: v for k, v in vars(args).items()}, "sections": {}}
    start = time.perf_counter()
    for name in args.sections:
        t0 = time.perf_counter()
        try:
            if name == "real_run":
                section = {"result": _real_run(args)}
            elif name not in SUITES:
                section = {"skipped": f"no '{name}' suite in target_ssl.benchmark.SUITES"}
            else:
                section = _suite_section(name, SUITES[name], args)
        except Exception as e:  # one broken section must not cost the whole (lent) GPU session
            section = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=5)}
        section["seconds"] = time.perf_counter() - t0
        report["sections"][name] = section
        print(f"[all] {name}: {section['seconds']:.1f} s" + (f" ERROR {section['error']}" if "error" in section else ""))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    report["total_s"] = time.perf_counter() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: f.write(json.dumps(json_safe(report), indent=2).encode()))
    print(f"[all] {report['total_s']:.0f} s in all; wrote {args.out}")
    return report
