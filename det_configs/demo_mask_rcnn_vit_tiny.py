"""Mask R-CNN + ViT-tiny on the built-in demo COCO-layout data (6 shape classes, 128-192 px images).

Sized to finish in a few minutes on a 2-core CPU, from random init or from the demo pretraining
export (`--weights runs/demo/pretrain/encoder.safetensors`). The recipe is the COCO 3x one scaled
to the images' native size: multi-scale crop policy with short sides 160..224 (crop branch:
resize to 128..192, crop 96..160), flip, AdamW with warmup and a step decay, evaluation at short
side 192. The demo data is generated on first use (seconds, no download).
"""

from engine.demo_data import ensure_demo_coco
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
    # Narrow heads (64-channel pyramid, 256-wide box MLP, 128 sampled RoIs) keep a step under a
    # second on a CPU; the real configs use torchvision's standard 256 / 1024 / 512.
    model=ModelConfig(
        arch="vit_tiny", adapter="maxpool_deconv", weights=None, drop_path=0.0, pos_embed="sincos",
        fpn_channels=64, box_head_dim=256, mask_head_channels=64, rpn_batch_size=128, roi_batch_size=128,
    ),
    data=DataConfig(
        kind="coco",
        root=str(ensure_demo_coco()),
        policy="multiscale_crop",
        train_sizes=(160, 192, 224),
        max_size=384,
        crop_pre_sizes=(128, 160, 192),
        crop_size=(96, 160),
        test_size=192,
        test_max_size=320,
        num_workers=1,
    ),
    optim=OptimConfig(
        lr=3e-4, weight_decay=0.05, schedule="multistep", gamma=0.1, warmup_steps=20, warmup_start=0.001,
        clip_grad=None,
    ),
    solver=SolverConfig(epochs=12, milestones=(9, 11), batch_size=4),
    eval=EvalConfig(every_epochs=6, detections_per_image=100, score_threshold=0.05, batch_size=4),
    run=RunConfig(output_dir="runs/demo_det", log_every=5, ckpt_every_steps=100, precision="auto"),
)
