"""Train (or evaluate) UperNet on a ViT for semantic segmentation (ADE20k or any dataset in its layout).

    python tools/train_seg.py --config upernet_splitmask_vitb_ade20k.py \\
        --weights runs/pretrain_ade/encoder.safetensors --data-root $ADE/ADEChallengeData2016
    python tools/train_seg.py --config demo_upernet_vit_tiny.py           # built-in demo data, minutes on a CPU
    python tools/train_seg.py --config upernet_splitmask_vitb_ade20k.py --eval-only --weights runs/seg/best.pth
    torchrun --nproc_per_node 8 tools/train_seg.py --config upernet_splitmask_vitb_ade20k.py ...

`--config` is looked up as given, then under seg_configs/. `--set key=value` overrides any config
field (e.g. `--set optim.lr=5e-4 solver.iterations=80000 eval.mode=whole`).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run the code of this checkout, not another one that an editable install points to.
_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(_REPO)] + [p for p in sys.path if Path(p or ".").resolve() not in (_REPO, _REPO / "tools")]

from transfer.cli import TransferCLI  # noqa: E402
from transfer.segmentation.config import SegConfig  # noqa: E402
from transfer.segmentation.data import AnnotationError, BrokenFilesError  # noqa: E402
from transfer.segmentation.loop import evaluate, train  # noqa: E402


def summarize(result: dict) -> dict:
    return {k: result[k] for k in ("mIoU", "mAcc", "aAcc") if k in result}


CLI = TransferCLI(
    description=__doc__,
    config_type=SegConfig,
    config_dirs=[Path("seg_configs"), _REPO / "seg_configs"],
    model_name="UperNet",
    data_root_help="dataset folder holding images/ and annotations/ (data.root)",
    set_example="optim.lr=5e-4 data.root=/data/ADEChallengeData2016",
    train=train,
    evaluate=evaluate,
    summarize=summarize,
    input_errors=(AnnotationError, BrokenFilesError),
)
parse_args, build_config, main = CLI.parse_args, CLI.build_config, CLI.main


if __name__ == "__main__":
    main()
