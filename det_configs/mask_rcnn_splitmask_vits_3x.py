"""Mask R-CNN + ViT-S on COCO, encoder pretrained with SplitMask on COCO's own training images.

Paper reference (El-Nouby et al., "Are Large-scale Datasets Necessary for Self-Supervised
Pre-training?", Table 4, COCO val2017, 3x): ViT-S SplitMask 45.3 box AP / 40.6 mask AP
(AP50 66.9 / 63.6, AP75 49.4 / 43.5).

Recipe (Liu et al. 3x, which the paper follows): AdamW lr 1e-4, wd 0.05 (none on norms, position
embeddings, tokens), 16 images per step, 36 epochs with x0.1 at epochs 27 and 33, 500-iteration
linear warmup from 0.001; multi-scale training (short side 480..800 step 32, long side <= 1333)
with the crop policy (resize {400, 500, 600} -> random crop 384..600 -> multi-scale), flip; drop
path 0.1; sinusoidal positions at every input size; max-pool / deconvolution adapter on blocks
3, 5, 7, 11 -> FPN (256 ch, p6 by max-pool). Test: short side 800, long side <= 1333, 100
detections per image.

Encoder weights: --weights PATH, --set model.weights=PATH, or the environment variable
TARGET_SSL_DET_WEIGHTS (any supported layout: our pretraining checkpoint or encoder export, MAE,
BEiT, timm). Data: --data-root /path/to/coco (train2017/, val2017/, annotations/).
"""

import os

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
        arch="vit_small",
        adapter="maxpool_deconv",
        weights=os.environ.get("TARGET_SSL_DET_WEIGHTS", "runs/pretrain_splitmask_vit_small_coco/encoder.safetensors"),
        drop_path=0.1,
        pos_embed="sincos",
    ),
    data=DataConfig(
        kind="coco",
        root=os.environ.get("TARGET_SSL_COCO", "data/coco"),
        policy="multiscale_crop",
        train_sizes=tuple(range(480, 801, 32)),
        max_size=1333,
        crop_pre_sizes=(400, 500, 600),
        crop_size=(384, 600),
        test_size=800,
        test_max_size=1333,
        num_workers=4,
    ),
    optim=OptimConfig(
        lr=1e-4, weight_decay=0.05, layer_decay=None, schedule="multistep", gamma=0.1,
        warmup_steps=500, warmup_start=0.001, clip_grad=None,
    ),
    solver=SolverConfig(epochs=36, milestones=(27, 33), batch_size=16),
    eval=EvalConfig(every_epochs=4, detections_per_image=100, score_threshold=0.05, batch_size=2),
    run=RunConfig(output_dir="runs/det_splitmask_vits_3x", log_every=20, ckpt_every_steps=2000),
)
