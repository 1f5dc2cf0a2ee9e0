"""Mask R-CNN + ViT-tiny on the built-in demo COCO-layout data (6 shape classes, 128-192 px images).

Sized for a few minutes on a 2-core CPU, from random init or from the demo pretraining export
(`--weights runs/demo/pretrain_coco/encoder.safetensors`). The recipe is the COCO 3x one scaled to the
images' native size: the multi-scale crop policy with short sides 128..192 (crop branch: resize to
112..144, crop 80..128, resize back to 128..192), flip, AdamW with warmup and x0.1 steps at 3/4
and 17/18 of the run, evaluation at short side 160. Anchors are halved (16..256 px) because the
objects are ~5x smaller than COCO objects at 800 px, and the heads are narrow (64-channel pyramid,
256-wide box MLP, 128 sampled RoIs per image) so that a step takes well under a second on a CPU;
the real configs use torchvision's standard 32..512 anchors and 256 / 1024 / 512 heads.
Measured on the demo data (random init, 24 epochs): about 3 box AP / 9 box AP50 / 2 mask AP; a
detector this small learns slowly from 90 images, so the numbers grow with solver.epochs. The demo
runs 6 epochs (132 steps, about 2 min on the idle 2-core CPU): about 1 box AP from random init and
from the demo's SplitMask encoder alike (seed 0).
The demo data is generated when the dataset is first built (seconds, no download), not on load.
"""

from demo_data import DEMO_ROOT
from transfer.detection.config import (
    DataConfig,
    DetConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    SolverConfig,
)

config = DetConfig(
    model=ModelConfig(
        arch="vit_tiny", adapter="maxpool_deconv", weights=None, drop_path=0.0, pos_embed="sincos",
        anchor_sizes=(16, 32, 64, 128, 256),
        fpn_channels=64, box_head_dim=256, mask_head_channels=64, rpn_batch_size=128, roi_batch_size=128,
    ),
    data=DataConfig(
        kind="coco",
        root=DEMO_ROOT,  # resolved (and generated on first use) when the dataset is built
        policy="multiscale_crop",
        train_sizes=(128, 160, 192),
        max_size=320,
        crop_pre_sizes=(112, 128, 144),
        crop_size=(80, 128),
        test_size=160,
        test_max_size=288,
        num_workers=1,
    ),
    optim=OptimConfig(
        lr=3e-4, weight_decay=0.05, schedule="multistep", gamma=0.1, warmup_steps=20, warmup_start=0.001,
        clip_grad=None,
    ),
    solver=SolverConfig(epochs=18, milestones=(14, 17), batch_size=4),
    eval=EvalConfig(every_epochs=9, detections_per_image=100, score_threshold=0.05, batch_size=4),
    run=RunConfig(output_dir="runs/demo_det", log_every=5, ckpt_every_steps=100, precision="auto"),
)
