"""The demo's classification track: fine-tune and linear-probe from a pretrained encoder and from
random init at equal budgets, on the built-in classification demo data (`cls_configs/demo_cls_vit_tiny.py`).

    run_classification_track(out_dir, encoder, seed=0, budget=30, device="auto") -> {
        "finetune_top1": {"pretrained": ..., "random": ...},
        "linear_top1": {"pretrained": ..., "random": ...},
        "wall_s": {"finetune_pretrained": ..., ...}, "total_wall_s": ..., "runs": {name: run_dir}}

`encoder=None` runs the random-init rows only. Pretraining the encoder is the caller's step
(tools/demo.py pretrains on `ensure_demo_cls() / "train"`: `--data folder`), since transfer does
not import pretrain.
"""

from __future__ import annotations

import time
from pathlib import Path

from engine.config import apply_overrides, load_config

from .config import ClsConfig
from .frozen import run_probe
from .loop import train

__all__ = ["run_classification_track", "demo_config"]

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "cls_configs" / "demo_cls_vit_tiny.py"


def demo_config(mode: str, encoder: str | Path | None, out: Path, seed: int, budget: int, device: str) -> ClsConfig:
    """The demo config for one run: `budget` fine-tuning epochs (warmup a sixth of them, at least 1);
    random init (encoder None) trains without layer decay, as the paper's scratch rows."""
    cfg = load_config(DEMO_CONFIG)
    overrides = [
        f"mode={mode}", f"model.weights={encoder if encoder else 'None'}", f"run.seed={seed}", f"run.device={device}",
        f"run.output_dir={out}", "run.resume=auto", f"solver.warmup_epochs={max(1, budget // 6)}",
        f"solver.epochs={budget}", f"eval.every_epochs={budget}",
    ]
    if not encoder:
        overrides.append("optim.layer_decay=None")  # the paper's scratch rows: no layer decay
    if budget <= max(1, budget // 6):
        raise ValueError(f"budget={budget} epochs is too short for a warmup; use at least 2")
    return apply_overrides(cfg, overrides)


def run_classification_track(out_dir: str | Path, encoder: str | Path | None, seed: int = 0, budget: int = 30,
                             device: str = "auto") -> dict:
    """Fine-tuning top-1 and linear-probe top-1, pretrained vs random init (see the module doc)."""
    out = Path(out_dir)
    inits = {"pretrained": encoder, "random": None} if encoder else {"random": None}
    result: dict = {"finetune_top1": {}, "linear_top1": {}, "wall_s": {}, "runs": {}}
    start = time.perf_counter()
    for init, weights in inits.items():
        for mode, key, fn in (("finetune", "finetune_top1", train), ("linear", "linear_top1", run_probe)):
            name = f"cls_{mode}_{init}"
            t0 = time.perf_counter()
            metrics = fn(demo_config(mode, weights, out / name, seed, budget, device))
            result[key][init] = metrics["top1"]
            result["wall_s"][name] = round(time.perf_counter() - t0, 1)
            result["runs"][name] = str(out / name)
    result["total_wall_s"] = round(time.perf_counter() - start, 1)
    return result
