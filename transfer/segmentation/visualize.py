"""Segmentation overlays: image | ground truth | prediction, with one colour per class."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

IGNORE_INDEX = 255


def palette(num_classes: int, seed: int = 3) -> torch.Tensor:
    """(num_classes, 3) uint8 colours, fixed by the seed so figures are comparable across runs."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(40, 256, (num_classes, 3), generator=g, dtype=torch.uint8)


def colorize(label: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
    """label (H, W) long with IGNORE_INDEX for unlabelled -> (H, W, 3) uint8; ignored pixels black."""
    out = colors[label.clamp(max=len(colors) - 1)]
    out[label == IGNORE_INDEX] = 0
    return out


def save_segmentation_figure(
    rows: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    num_classes: int,
    out_png: str | Path,
    alpha: float = 0.55,
) -> Path:
    """One row per image: image | ground-truth overlay | prediction overlay.

    rows: (image (3, H, W) uint8, target (H, W) long, prediction (H, W) long).
    """
    colors = palette(num_classes)
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), dpi=110, squeeze=False)
    for (image, target, pred), row_axes in zip(rows, axes):
        img = image.permute(1, 2, 0).float()
        panels = [img, (1 - alpha) * img + alpha * colorize(target, colors).float(),
                  (1 - alpha) * img + alpha * colorize(pred, colors).float()]
        for ax, panel, title in zip(row_axes, panels, ("image", "ground truth", "prediction")):
            ax.imshow(panel.clamp(0, 255).byte().numpy())
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def save_predictions_figure(cfg, checkpoint: str | Path, out_png: str | Path, num_images: int = 3) -> Path:
    """Run the trained UperNet of `cfg` (a `SegConfig`) from `checkpoint` on the first validation
    images (the evaluation's inference mode) and save image | ground truth | prediction rows."""
    import dataclasses

    from engine.checkpoint import load_checkpoint

    from .data import SegDataset
    from .inference import predict_logits
    from .loop import build_model, resolve_classes
    from .transforms import EvalTransform

    _, num_classes = resolve_classes(cfg)
    model = build_model(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=None)), num_classes)
    model.load_state_dict(load_checkpoint(checkpoint, allow_pickle=cfg.run.allow_pickle)["model"])
    model.eval()
    dataset = SegDataset(cfg.data.root, "val", num_classes, EvalTransform(cfg.data.scale),
                         reduce_zero_label=cfg.data.reduce_zero_label, max_images=num_images)
    rows = []
    for index in range(len(dataset)):
        raw, _ = dataset.read(index)
        sample = dataset[index]
        with torch.no_grad():
            logits = predict_logits(model, sample["image"][None], num_classes, cfg.eval.mode, cfg.eval.crop,
                                    cfg.eval.stride, out_size=tuple(sample["label"].shape))
        rows.append((torch.from_numpy(raw).permute(2, 0, 1), sample["label"], logits.argmax(1)[0]))
    return save_segmentation_figure(rows, num_classes, out_png)
