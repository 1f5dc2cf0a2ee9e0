"""The whole paper on the built-in demo data, from images to a results table, in one command.

    target-ssl-demo                            # ~7 minutes on a 2-core CPU, faster on a GPU
    target-ssl-demo --output-dir runs/demo --seed 0
    python tools/demo.py --tiny                # from a checkout: the same flags

1. pretrain SplitMask (ViT-tiny) on each target's own training images, no labels used: one encoder
   on the COCO-layout demo images, one on the ADE20k-layout demo images (the paper's setting:
   the pretraining data is the target data);
2. fine-tune Mask R-CNN (COCO-layout demo) and UperNet (ADE20k-layout demo) twice each, from the
   encoder pretrained on that target and from random init, with identical budgets and seeds;
3. write `results.md` / `results.json` and pictures (loss curves, SplitMask's split, detections and
   segmentation overlays next to the ground truth) into the output directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import det_configs
import seg_configs
from demo_data import ensure_demo_ade, ensure_demo_coco
from engine.config import apply_overrides, load_config
from engine.logging import format_seconds, setup_logging
from engine.plots import plot_loss_curves
from pretrain.config import default_config
from pretrain.loop import train as pretrain
from pretrain.masking import SplitMasking
from pretrain.visualize import save_split_figure
from transfer.detection.loop import train as train_det
from transfer.detection.visualize import save_predictions_figure as save_det_figure
from transfer.segmentation.loop import train as train_seg
from transfer.segmentation.visualize import save_predictions_figure as save_seg_figure

INITS = ("pretrained", "random_init")
# Budgets (pretraining epochs per target, detection epochs, segmentation iterations): 7.3 minutes
# in all on an idle 2-core CPU (under the 15-minute bound), and a 20-second pipeline check with --tiny.
FULL = (20, 6, 200)
TINY = (1, 1, 4)
# Which demo images each task's encoder is pretrained on: the task's own training split.
PRETRAIN_DATA = {"det": "coco", "seg": "ade"}
_log = logging.getLogger("target_ssl")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="runs/demo", help="where every run, table and picture goes")
    p.add_argument("--seed", type=int, default=0, help="one seed for pretraining and all fine-tuning runs")
    p.add_argument("--pretrain-epochs", type=int, default=None,
                   help=f"SplitMask epochs over each target's 96 training images (default {FULL[0]}; "
                        f"--tiny {TINY[0]})")
    p.add_argument("--det-epochs", type=int, default=None,
                   help=f"Mask R-CNN epochs, both initialisations (default {FULL[1]}; --tiny {TINY[1]})")
    p.add_argument("--seg-iters", type=int, default=None,
                   help=f"UperNet iterations, both initialisations (default {FULL[2]}; --tiny {TINY[2]})")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--tiny", action="store_true",
        help="a 2-block, 64-wide ViT and a few steps per stage: checks the pipeline in under a minute",
    )
    return p


def _size_overrides(tiny: bool) -> list[str]:
    return ["model.embed_dim=64", "model.depth=2", "model.num_heads=2"] if tiny else []


def _loader_overrides(args: argparse.Namespace) -> list[str]:
    """Load data in the training process when training runs on the CPU. Loader workers there share
    the cores with the compute threads and restart every epoch (96 images = a few steps), which on
    the 2-core machine made every stage 35-40% slower (UperNet 1:51 vs 1:10, Mask R-CNN 2:04 vs
    1:35, pretraining 80 s vs 53 s); on a GPU the configs' workers stay."""
    on_cpu = args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())
    return ["data.num_workers=0"] if on_cpu or args.tiny else []


def run_pretraining(args: argparse.Namespace, out: Path, data: str) -> dict:
    """SplitMask on the training images of the demo set `data` ("coco" / "ade") -> out/pretrain_<data>."""
    cfg = default_config("splitmask", "demo")
    overrides = [
        "model.arch=vit_tiny", f"schedule.epochs={args.pretrain_epochs}", f"run.seed={args.seed}",
        f"run.output_dir={out / f'pretrain_{data}'}", f"run.device={args.device}", "run.resume=auto",
        *_size_overrides(args.tiny), *_loader_overrides(args),
    ]
    if data == "ade":
        # The ADE20k source reads images/training. Its `ade20k` crop recipe (at most 25% of the image)
        # is meant for 512+ px photos; the demo's 160x192 images would be magnified ~2x against the
        # fine-tuning scale, so the demo keeps the default crop range.
        overrides += ["data.name=ade20k", f"data.root={ensure_demo_ade()}", "data.augment=default"]
    if args.tiny:
        overrides.append("tokenizer.vocab_size=256")
    return pretrain(apply_overrides(cfg, overrides))


def transfer_config(kind: str, init: str, encoder: Path, args: argparse.Namespace, out: Path):
    """The demo config of `kind` ("det" / "seg") for one initialisation; everything else equal."""
    name, package = {"det": ("demo_mask_rcnn_vit_tiny.py", det_configs),
                     "seg": ("demo_upernet_vit_tiny.py", seg_configs)}[kind]
    cfg = load_config(name, [Path(package.__file__).parent])
    weights = str(encoder) if init == "pretrained" else "None"
    budget = f"solver.epochs={args.det_epochs}" if kind == "det" else f"solver.iterations={args.seg_iters}"
    overrides = [
        f"model.weights={weights}", f"run.seed={args.seed}", f"run.device={args.device}",
        f"run.output_dir={out / f'{kind}_{init}'}", "run.resume=auto", *_size_overrides(args.tiny),
        *_loader_overrides(args),
    ]
    if kind == "det":
        # Milestones at 3/4 and 11/12 of the budget, as in the 3x schedule (27 and 33 of 36); they
        # are set before the epochs so the config never sees milestones beyond its length.
        e = args.det_epochs
        milestones = sorted({m for m in (round(e * 0.75), round(e * 11 / 12)) if 0 < m < e})
        overrides[:0] = [f"solver.milestones={tuple(milestones)}", budget, f"eval.every_epochs={e}"]
    else:
        overrides += [budget, f"eval.every={args.seg_iters}"]
    if args.tiny:
        # A pipeline check, not an experiment: a few steps, no warmup, a few validation images.
        overrides += ["optim.warmup_steps=0", "eval.max_images=4"]
        if kind == "det":
            overrides.append("solver.max_iters=3")
    return apply_overrides(cfg, overrides)


def save_pictures(out: Path, configs: dict, results: dict, seed: int) -> list[Path]:
    """Loss curves, SplitMask's split of a training image, predictions next to the ground truth."""
    pics = [plot_loss_curves({f"on demo {d.upper()} images": out / f"pretrain_{d}" / "metrics.jsonl"
                              for d in PRETRAIN_DATA.values()},
                             out / "pretrain_loss.png", title="SplitMask pretraining loss (MIM + InfoNCE)")]
    pics.append(plot_loss_curves({i: out / f"det_{i}" / "metrics.jsonl" for i in INITS}, out / "det_loss.png",
                                 title="Mask R-CNN fine-tuning loss"))
    pics.append(plot_loss_curves({i: out / f"seg_{i}" / "metrics.jsonl" for i in INITS}, out / "seg_loss.png",
                                 title="UperNet fine-tuning loss"))
    pics.append(_split_picture(out / "splitmask_split.png", seed))
    for init in INITS:
        pics.append(save_det_figure(configs[("det", init)], results[("det", init)]["checkpoint"],
                                    out / f"detections_{init}.png"))
        pics.append(save_seg_figure(configs[("seg", init)], results[("seg", init)]["checkpoint"],
                                    out / f"segmentation_{init}.png"))
    return pics


def _split_picture(path: Path, seed: int) -> Path:
    image_path = sorted((ensure_demo_coco() / "train2017").glob("*.jpg"))[1]
    with Image.open(image_path) as im:
        image = torch.from_numpy(np.array(im.convert("RGB").resize((128, 128)))).permute(2, 0, 1)
    ids_a = SplitMasking(grid=(8, 8))(np.random.default_rng(seed))["ids_a"]
    in_a = torch.zeros(64, dtype=torch.bool)
    in_a[ids_a] = True
    return save_split_figure(image.float() / 255, in_a.reshape(8, 8), 16, path)


def results_table(results: dict, args: argparse.Namespace, wall: float) -> tuple[str, dict]:
    rows = {
        init: {
            "box AP": results[("det", init)]["bbox_AP"],
            "mask AP": results[("det", init)]["segm_AP"],
            "mIoU": results[("seg", init)]["mIoU"],
        }
        for init in INITS
    }
    lines = [
        "| initialisation | box AP | mask AP | mIoU |",
        "|---|---|---|---|",
        *(f"| {init} | {r['box AP']:.1f} | {r['mask AP']:.1f} | {r['mIoU']:.1f} |" for init, r in rows.items()),
    ]
    budget = (f"seed {args.seed}; SplitMask ViT-tiny pretraining {args.pretrain_epochs} epochs on each target's "
              f"training images (COCO-layout for Mask R-CNN, ADE20k-layout for UperNet; no labels); "
              f"fine-tuning budgets equal for both rows: Mask R-CNN {args.det_epochs} epochs, "
              f"UperNet {args.seg_iters} iterations; AP and mIoU in percent on the demo validation splits; "
              f"wall time {format_seconds(wall)}")
    text = "\n".join(lines) + "\n\n" + budget + "\n"
    return text, {"rows": rows, "seed": args.seed, "pretrain_epochs": args.pretrain_epochs,
                  "det_epochs": args.det_epochs, "seg_iters": args.seg_iters, "tiny": args.tiny,
                  "wall_time_s": round(wall, 1)}


def _demo_log_handler(path: Path) -> logging.Handler:
    """The demo's own record of all its stages: a handler `setup_logging` does not own, so the
    stages' calls (which replace the handlers it installed) leave it in place."""
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s %(levelname)s] %(message)s", datefmt="%Y-%m-%d %H:%M:%S"))
    return handler


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    defaults = TINY if args.tiny else FULL
    for name, default in zip(("pretrain_epochs", "det_epochs", "seg_iters"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, default)
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    setup_logging()
    record = _demo_log_handler(out / "log.txt")  # kept when each stage sets up its own log
    _log.addHandler(record)
    try:
        summary = _run_stages(args, out)
    finally:
        _log.removeHandler(record)
        record.close()
    return summary


def _run_stages(args: argparse.Namespace, out: Path) -> dict:
    start = time.perf_counter()
    _log.info("demo data: %s and %s", ensure_demo_coco(), ensure_demo_ade())

    encoders = {}
    for kind, data in PRETRAIN_DATA.items():
        _log.info("[1/3] SplitMask pretraining on the demo %s training images -> %s", data.upper(),
                  out / f"pretrain_{data}")
        encoders[kind] = run_pretraining(args, out, data)["encoder"]

    configs, results = {}, {}
    for step, (kind, train) in enumerate((("det", train_det), ("seg", train_seg)), start=2):
        for init in INITS:
            cfg = transfer_config(kind, init, encoders[kind], args, out)
            _log.info("[%d/3] %s fine-tuning from %s -> %s", step, "Mask R-CNN" if kind == "det" else "UperNet",
                      init, cfg.run.output_dir)
            configs[(kind, init)], results[(kind, init)] = cfg, train(cfg)

    pics = save_pictures(out, configs, results, args.seed)
    text, summary = results_table(results, args, time.perf_counter() - start)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n" + text)
    print(f"results: {out / 'results.md'}, {out / 'results.json'}")
    print("pictures: " + ", ".join(p.name for p in pics) + f" in {out}")
    print(f"runs (configs, checkpoints, metrics.jsonl, TensorBoard): {out}/{{pretrain_*,det_*,seg_*}}")
    return summary


def entry() -> None:
    """The console script (exit status 0; see :func:`pretrain.cli.entry`)."""
    main()


if __name__ == "__main__":
    main()
