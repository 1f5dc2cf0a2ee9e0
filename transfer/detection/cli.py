"""Train (or evaluate) Mask R-CNN on a ViT for detection and instance segmentation (COCO, LVIS, custom).

    target-ssl-train-det --config mask_rcnn_splitmask_vits_3x.py \\
        --weights runs/pretrain_coco/encoder.safetensors --data-root /data/coco
    target-ssl-train-det --config demo_mask_rcnn_vit_tiny.py          # built-in demo data, minutes on a CPU
    target-ssl-train-det --config mask_rcnn_splitmask_vits_3x.py --eval-only --weights runs/det/best.pth
    torchrun --nproc_per_node 8 -m transfer.detection.cli --config mask_rcnn_splitmask_vitb_3x.py ...

From a checkout, `python tools/train_det.py` takes the same flags. `--config` is looked up as given,
then under ./det_configs/, then in the installed `det_configs` package. `--set key=value` overrides any
config field (e.g. `--set optim.lr=2e-4 solver.epochs=12 data.kind=lvis`). AP is reported in percent.
"""

from __future__ import annotations

from pathlib import Path

import det_configs
from transfer.cli import TransferCLI

from .config import DetConfig
from .datasets import AnnotationFormatError, BrokenImagesError
from .loop import evaluate, train


def summarize(result: dict) -> dict:
    """Box and mask AP, AP50, AP75, ... (None where COCOeval gave NaN)."""
    keys = [k for k in result if k.startswith(("bbox_AP", "segm_AP")) and k.count("_") == 1]
    return {k: (None if result[k] != result[k] else round(result[k], 2)) for k in keys}


CLI = TransferCLI(
    description=__doc__,
    config_type=DetConfig,
    config_dirs=[Path("det_configs"), Path(det_configs.__file__).parent],
    model_name="Mask R-CNN",
    data_root_help="dataset root (data.root), e.g. the COCO folder with train2017/ val2017/ annotations/",
    set_example="optim.lr=2e-4 data.root=/data/coco",
    train=train,
    evaluate=evaluate,
    summarize=summarize,
    input_errors=(AnnotationFormatError, BrokenImagesError),
)
parse_args, build_config, main, entry = CLI.parse_args, CLI.build_config, CLI.main, CLI.entry


if __name__ == "__main__":
    main()
