"""Train (or evaluate) UperNet on a ViT for semantic segmentation (ADE20k or any dataset in its layout).

    target-ssl-train-seg --config upernet_splitmask_vitb_ade20k.py \\
        --weights runs/pretrain_ade/encoder.safetensors --data-root $ADE/ADEChallengeData2016
    target-ssl-train-seg --config demo_upernet_vit_tiny.py           # built-in demo data, minutes on a CPU
    target-ssl-train-seg --config upernet_splitmask_vitb_ade20k.py --eval-only --weights runs/seg/best.pth
    torchrun --nproc_per_node 8 -m transfer.segmentation.cli --config upernet_splitmask_vitb_ade20k.py ...

From a checkout, `python tools/train_seg.py` takes the same flags. `--config` is looked up as given,
then under ./seg_configs/, then in the installed `seg_configs` package. `--set key=value` overrides any
config field (e.g. `--set optim.lr=5e-4 solver.iterations=80000 eval.mode=whole`).
"""

from __future__ import annotations

from pathlib import Path

import seg_configs
from transfer.cli import TransferCLI

from .config import SegConfig
from .data import AnnotationError, BrokenFilesError
from .loop import evaluate, train


def summarize(result: dict) -> dict:
    return {k: result[k] for k in ("mIoU", "mAcc", "aAcc") if k in result}


CLI = TransferCLI(
    description=__doc__,
    config_type=SegConfig,
    config_dirs=[Path("seg_configs"), Path(seg_configs.__file__).parent],
    model_name="UperNet",
    data_root_help="dataset folder holding images/ and annotations/ (data.root)",
    set_example="optim.lr=5e-4 data.root=/data/ADEChallengeData2016",
    train=train,
    evaluate=evaluate,
    summarize=summarize,
    input_errors=(AnnotationError, BrokenFilesError),
)
parse_args, build_config, main, entry = CLI.parse_args, CLI.build_config, CLI.main, CLI.entry


if __name__ == "__main__":
    main()
