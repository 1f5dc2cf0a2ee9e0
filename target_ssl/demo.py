"""The whole paper on the built-in demo data, from images to a results table, in one command.

    target-ssl-demo                            # UperNet + classifier, 5-8 minutes on a 2-core CPU
    target-ssl-demo --tracks det seg cls       # adds Mask R-CNN (9-16 minutes)
    target-ssl-demo --seeds 0 1 2              # mean +- std over seeds and whether gains beat seed noise
    target-ssl-demo --tracks cls --methods splitmask dino --seeds 0 1 2   # the paper's DAE vs JE question
    python tools/demo.py --tiny                # from a checkout: the same flags

For each seed:
1. pretrain (SplitMask ViT-tiny; `--methods` adds others) on each track's own training images, no
   labels used, with the health probe every few epochs (frozen features against random init);
2. fine-tune each track from each pretrained encoder and from random init at equal budgets, under
   the fair protocol: every initialisation gets the recipe the paper gives it (pretrained: layer
   decay; random init: none, as the paper's scratch rows); classification adds the linear probe;
3. write `results.md` / `results.json` (per seed, mean +- std, the verdict) and pictures (loss and
   probe curves, SplitMask's split, detections and segmentation next to the ground truth).
Tracks: det (Mask R-CNN, COCO-layout demo), seg (UperNet, ADE20k-layout demo), cls (ViT classifier,
class-folder demo).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import det_configs
import seg_configs
from demo_data import ensure_demo_ade, ensure_demo_cls, ensure_demo_coco
from engine.config import apply_overrides, load_config
from engine.logging import format_seconds, json_safe, setup_logging
from engine.plots import plot_loss_curves
from pretrain.config import default_config
from pretrain.loop import train as pretrain
from pretrain.masking import SplitMasking
from pretrain.visualize import save_split_figure
from target_ssl.demo_report import COLUMNS, aggregate, fmt, markdown_table
from target_ssl.probe_monitor import build_monitor
from transfer.classification.frozen import run_probe as probe_cls
from transfer.classification.loop import train as train_cls
from transfer.classification.track import demo_config as cls_demo_config
from transfer.detection.loop import train as train_det
from transfer.detection.visualize import save_predictions_figure as save_det_figure
from transfer.segmentation.loop import train as train_seg
from transfer.segmentation.visualize import save_predictions_figure as save_seg_figure

RANDOM = "random_init"
TRACKS = ("det", "seg", "cls")
# Mask R-CNN is opt-in (`--tracks det seg cls`): its track (COCO pretraining and two fine-tunings,
# 3:25 on the faster 2-core CPUs, up to ~6 minutes on the slower ones) would take the default run
# (5:15 there, up to ~9.5 minutes) close to 15 minutes on the slower machines of that kind.
DEFAULT_TRACKS = ("seg", "cls")
METHODS = ("splitmask", "beit", "mae", "dino")


@dataclasses.dataclass(frozen=True)
class Budget:
    """Per seed: pretraining epochs (each track's images), Mask R-CNN epochs, UperNet iterations,
    classifier epochs, and the probe's period in pretraining epochs."""

    pretrain_epochs: int
    det_epochs: int
    seg_iters: int
    cls_epochs: int
    probe_every: int


FULL = Budget(pretrain_epochs=20, det_epochs=6, seg_iters=200, cls_epochs=20, probe_every=5)
TINY = Budget(pretrain_epochs=1, det_epochs=1, seg_iters=4, cls_epochs=2, probe_every=1)
# Which demo images each track's encoder is pretrained on: the track's own training split.
PRETRAIN_DATA = {"det": "coco", "seg": "ade", "cls": "cls"}
_log = logging.getLogger("target_ssl")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="runs/demo", help="where every run, table and picture goes")
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="one full demo per seed (pretraining and every fine-tuning run); with 2 or more the "
                        "table gives mean +- std and whether each gain beats seed noise")
    p.add_argument("--seed", type=int, dest="seeds", action="store", help=argparse.SUPPRESS)  # older spelling
    p.add_argument("--tracks", nargs="+", choices=TRACKS, default=list(DEFAULT_TRACKS),
                   help="which transfers to run (default seg cls; det adds Mask R-CNN, 3.5-6 minutes on a CPU)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=["splitmask"],
                   help="pretraining methods, one row each (equal budgets)")
    for name, help_text in (("pretrain-epochs", "pretraining epochs over each track's training images"),
                            ("det-epochs", "Mask R-CNN epochs"), ("seg-iters", "UperNet iterations"),
                            ("cls-epochs", "classifier fine-tuning epochs"),
                            ("probe-every", "probe the encoder every N pretraining epochs (0: off)")):
        key = name.replace("-", "_")
        p.add_argument(f"--{name}", type=int, default=None,
                       help=f"{help_text} (default {getattr(FULL, key)}; --tiny {getattr(TINY, key)})")
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


def pretraining_config(args: argparse.Namespace, out: Path, data: str, method: str, seed: int):
    """`method` on the training images of the demo set `data` ("coco" / "ade" / "cls") -> out/pretrain_<data>[_<method>]."""
    cfg = default_config(method, "demo")
    suffix = "" if method == "splitmask" else f"_{method}"
    overrides = [
        "model.arch=vit_tiny", f"schedule.epochs={args.pretrain_epochs}", f"run.seed={seed}",
        f"run.output_dir={out / f'pretrain_{data}{suffix}'}", f"run.device={args.device}", "run.resume=auto",
        f"probe.every_epochs={args.probe_every}", *_size_overrides(args.tiny), *_loader_overrides(args),
    ]
    if data == "ade":
        # The ADE20k source reads images/training. Its `ade20k` crop recipe (at most 25% of the image)
        # is meant for 512+ px photos; the demo's 160x192 images would be magnified ~2x against the
        # fine-tuning scale, so the demo keeps the default crop range.
        overrides += ["data.name=ade20k", f"data.root={ensure_demo_ade()}", "data.augment=default"]
    elif data == "cls":
        # The classifier's 64 px images; DINO's local crops at half that.
        overrides += ["data.name=folder", f"data.root={ensure_demo_cls() / 'train'}", "data.img_size=64",
                      f"probe.root={ensure_demo_cls()}", "probe.data=folder"]
        if method == "dino":
            overrides.append("dino.local_crop_size=32")
    if args.tiny:
        overrides += ["tokenizer.vocab_size=256", "probe.max_train=16", "probe.max_val=8"]
        if method == "dino":
            overrides += ["dino.out_dim=256", "dino.hidden_dim=64", "dino.bottleneck_dim=32", "dino.local_crops_number=2"]
    return apply_overrides(cfg, overrides)


def run_pretraining(cfg) -> dict:
    return pretrain(cfg, build_monitor(cfg))


def demo_config(kind: str):
    """The shipped demo config of `kind` ("det" / "seg"), before the demo's overrides."""
    name, package = {"det": ("demo_mask_rcnn_vit_tiny.py", det_configs),
                     "seg": ("demo_upernet_vit_tiny.py", seg_configs)}[kind]
    return load_config(name, [Path(package.__file__).parent])


def transfer_config(kind: str, init: str, encoder: Path | None, args: argparse.Namespace, out: Path, seed: int):
    """The demo config of `kind` ("det" / "seg") for one initialisation, under the fair protocol:
    budgets equal, and random init without layer decay (the paper's scratch recipe)."""
    cfg = demo_config(kind)
    budget = f"solver.epochs={args.det_epochs}" if kind == "det" else f"solver.iterations={args.seg_iters}"
    overrides = [
        f"model.weights={encoder if encoder else 'None'}", f"run.seed={seed}", f"run.device={args.device}",
        f"run.output_dir={out / f'{kind}_{init}'}", "run.resume=auto", *_size_overrides(args.tiny),
        *_loader_overrides(args),
    ]
    if encoder is None:
        overrides.append("optim.layer_decay=None")
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


def run_classification(init: str, encoder: Path | None, args: argparse.Namespace, out: Path, seed: int) -> dict:
    """Fine-tuned and linear-probe top-1 of one initialisation on the class-folder demo."""
    results = {}
    for mode, fn in (("finetune", train_cls), ("linear", probe_cls)):
        cfg = cls_demo_config(mode, encoder, out / f"cls_{mode}_{init}", seed, args.cls_epochs, args.device)
        if args.tiny:
            cfg = apply_overrides(cfg, [*_size_overrides(True), "probe.warmup_epochs=0", "probe.epochs=2"])
        metrics = fn(cfg)
        results["top1" if mode == "finetune" else "linear_top1"] = metrics["top1"]
    return results


def save_pictures(out: Path, args: argparse.Namespace, configs: dict, results: dict, seed: int) -> list[Path]:
    """Loss and probe curves, SplitMask's split of a training image, predictions next to the ground truth."""
    rows = [*args.methods, RANDOM]  # a row per pretraining method, and random init
    pretrain_runs = {f"{m} on demo {PRETRAIN_DATA[t].upper()} images": r["run_dir"]
                     for (t, m), r in results["pretrain"].items()}
    pics = [plot_loss_curves({k: Path(v) / "metrics.jsonl" for k, v in pretrain_runs.items()},
                             out / "pretrain_loss.png", title="pretraining loss")]
    pics += [p for p in (results["probe_pictures"]) if p]
    for kind, title in (("det", "Mask R-CNN"), ("seg", "UperNet"), ("cls", "classifier")):
        if kind in args.tracks:
            runs = {r: out / (f"cls_finetune_{r}" if kind == "cls" else f"{kind}_{r}") / "metrics.jsonl" for r in rows}
            pics.append(plot_loss_curves(runs, out / f"{kind}_loss.png", title=f"{title} fine-tuning loss"))
    pics.append(_split_picture(out / "splitmask_split.png", seed))
    for row in rows:
        if "det" in args.tracks:
            pics.append(save_det_figure(configs[("det", row)], results[("det", row)]["checkpoint"],
                                        out / f"detections_{row}.png"))
        if "seg" in args.tracks:
            pics.append(save_seg_figure(configs[("seg", row)], results[("seg", row)]["checkpoint"],
                                        out / f"segmentation_{row}.png"))
    return pics


def _split_picture(path: Path, seed: int) -> Path:
    image_path = sorted((ensure_demo_coco() / "train2017").glob("*.jpg"))[1]
    with Image.open(image_path) as im:
        image = torch.from_numpy(np.array(im.convert("RGB").resize((128, 128)))).permute(2, 0, 1)
    ids_a = SplitMasking(grid=(8, 8))(np.random.default_rng(seed))["ids_a"]
    in_a = torch.zeros(64, dtype=torch.bool)
    in_a[ids_a] = True
    return save_split_figure(image.float() / 255, in_a.reshape(8, 8), 16, path)


def _probe_picture(run_dir: Path, out: Path, data: str, method: str) -> Path | None:
    src = Path(run_dir) / "probe_curve.png"
    if not src.is_file():
        return None
    dst = out / f"probe_{data}_{method}.png"
    shutil.copyfile(src, dst)
    return dst


def probe_summary(result: dict) -> dict[str, float]:
    """The final probe at the adapter's first tap: {"probe": encoder's score, "probe_random": its twin's}."""
    keys = sorted(k for k in result if k.startswith("probe/") and k.split("/")[1] in ("miou", "linear_acc"))
    if not keys:
        return {}
    key = min(keys, key=lambda k: int(k.rsplit("block", 1)[1]))
    return {"metric": key, "probe": result[key], "probe_random": result["probe_random/" + key.split("/", 1)[1]]}


def _demo_log_handler(path: Path) -> logging.Handler:
    """The demo's own record of all its stages: a handler `setup_logging` does not own, so the
    stages' calls (which replace the handlers it installed) leave it in place."""
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s %(levelname)s] %(message)s", datefmt="%Y-%m-%d %H:%M:%S"))
    return handler


def resolve_budget(args: argparse.Namespace) -> Budget:
    defaults = TINY if args.tiny else FULL
    for f in dataclasses.fields(Budget):
        if getattr(args, f.name) is None:
            setattr(args, f.name, getattr(defaults, f.name))
    return Budget(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Budget)})


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if isinstance(args.seeds, int):
        args.seeds = [args.seeds]
    budget = resolve_budget(args)
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    setup_logging()
    record = _demo_log_handler(out / "log.txt")  # kept when each stage sets up its own log
    _log.addHandler(record)
    try:
        start = time.perf_counter()
        per_seed = {}
        for seed in args.seeds:
            seed_out = out if len(args.seeds) == 1 else out / f"seed_{seed}"
            seed_out.mkdir(parents=True, exist_ok=True)
            per_seed[seed] = run_seed(args, seed_out, seed)
        summary = write_results(out, args, budget, per_seed, time.perf_counter() - start)
    finally:
        _log.removeHandler(record)
        record.close()
    return summary


def run_seed(args: argparse.Namespace, out: Path, seed: int) -> dict:
    """Every stage for one seed -> {"rows": {row: {column: value}}, "probe": ..., "pictures": [...]}."""
    t0 = time.perf_counter()
    n_stages = 1 + len(args.tracks)
    results: dict = {"pretrain": {}, "probe_pictures": []}
    encoders: dict[tuple[str, str], Path] = {}
    for track in args.tracks:
        data = PRETRAIN_DATA[track]
        for method in args.methods:
            cfg = pretraining_config(args, out, data, method, seed)
            _log.info("[1/%d] seed %d: %s pretraining on the demo %s training images -> %s", n_stages, seed,
                      method, data.upper(), cfg.run.output_dir)
            r = results["pretrain"][(track, method)] = run_pretraining(cfg)
            encoders[(track, method)] = r["encoder"]
            results["probe_pictures"].append(_probe_picture(r["run_dir"], out, data, method))

    configs: dict = {}
    rows: dict[str, dict[str, float]] = {}
    for step, track in enumerate(args.tracks, start=2):
        for row in [*args.methods, RANDOM]:
            encoder = encoders.get((track, row))  # None for random init
            label = row
            _log.info("[%d/%d] seed %d: %s fine-tuning from %s", step, n_stages, seed,
                      {"det": "Mask R-CNN", "seg": "UperNet", "cls": "classifier"}[track], label)
            if track == "cls":
                metrics = run_classification(label, encoder, args, out, seed)
            else:
                cfg = transfer_config(track, label, encoder, args, out, seed)
                metrics = (train_det if track == "det" else train_seg)(cfg)
                configs[(track, label)], results[(track, label)] = cfg, metrics
            rows.setdefault(label, {}).update(
                {col: metrics[key] for col, (t, key) in COLUMNS.items() if t == track and key in metrics})
    probes = {f"{PRETRAIN_DATA[t]}/{m}": probe_summary(r) for (t, m), r in results["pretrain"].items()}
    pictures = [str(p) for p in save_pictures(out, args, configs, results, seed)]
    return {"rows": rows, "probe": probes, "pictures": pictures, "wall_time_s": round(time.perf_counter() - t0, 1)}


def probe_rows(per_seed: dict) -> dict[str, dict[str, float]]:
    """One seed's final probes as table rows: {method or random_init: {"probe <metric> (<data>)": score}}."""
    rows: dict[str, dict[str, float]] = {}
    for name, p in per_seed["probe"].items():  # name: "<data>/<method>"
        if p:
            data, method = name.split("/")
            column = f"probe {p['metric'].split('/')[1]} ({data})"
            rows.setdefault(method, {})[column] = p["probe"]
            rows.setdefault(RANDOM, {})[column] = p["probe_random"]
    return rows


def write_results(out: Path, args: argparse.Namespace, budget: Budget, per_seed: dict, wall: float) -> dict:
    fine = aggregate([r["rows"] for r in per_seed.values()])
    probes = aggregate([probe_rows(r) for r in per_seed.values()])
    seeds = list(per_seed)
    notes = (f"seeds {' '.join(map(str, seeds))}; pretraining ({', '.join(args.methods)}, ViT-tiny) "
             f"{budget.pretrain_epochs} epochs on each track's own training images (no labels); fine-tuning "
             f"budgets equal for every row: Mask R-CNN {budget.det_epochs} epochs, UperNet {budget.seg_iters} "
             f"iterations, classifier {budget.cls_epochs} epochs; fair protocol: pretrained rows with layer decay, "
             f"random init without (the paper's scratch recipe); AP, mIoU and top-1 in percent on the demo "
             f"validation splits; mean ± sample std over seeds; wall time {format_seconds(wall)}")
    if "det" in args.tracks and demo_config("det").data.class_agnostic:
        notes += ("\n\nMask R-CNN is trained and scored class-agnostic (`data.class_agnostic`): one 'object' "
                  "class, box and mask AP matching ground truth of any category, since 132 CPU steps do not "
                  "teach a ViT-tiny the three shapes (see the README's detection sizing).")
    text = ("## Fine-tuning\n\n" + markdown_table(fine) + "\n## Frozen-feature probe at the adapter's first tap "
            "(held-out images; random init = an encoder of the same shape, freshly initialised)\n\n"
            + markdown_table(probes, first="encoder") + "\n" + notes + "\n")
    if len(seeds) > 1:
        text += "\n## Per seed\n\n" + "\n".join(
            f"- seed {s}: " + "; ".join(f"{row}: " + ", ".join(f"{c} {fmt(v)}" for c, v in cols.items())
                                        for row, cols in r["rows"].items()) for s, r in per_seed.items()) + "\n"
    summary = {"rows": {row: {c: s["mean"] for c, s in cols.items()} for row, cols in fine.items()},
               "stats": fine, "probe": probes, "per_seed": per_seed, "seeds": seeds, "tracks": args.tracks,
               "methods": args.methods, "budget": dataclasses.asdict(budget), "tiny": args.tiny,
               "wall_time_s": round(wall, 1)}
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(json_safe(summary), indent=2) + "\n")
    print("\n" + text)
    print(f"results: {out / 'results.md'}, {out / 'results.json'}")
    print(f"runs (configs, checkpoints, metrics.jsonl, TensorBoard) and pictures: {out}")
    return summary


def entry() -> None:
    """The console script (exit status 0; see :func:`pretrain.cli.entry`)."""
    main()


if __name__ == "__main__":
    main()
