"""UperNet + ViT-B on ADE20k, encoder pretrained with SplitMask on ADE20k's own training images.

Paper reference (El-Nouby et al., "Are Large-scale Datasets Necessary for Self-Supervised
Pre-training?", Table 5): ViT-B SplitMask pretrained on ADE20k only, UperNet, 45.7 mIoU
(BEiT on ADE20k 45.6, BEiT on ImageNet 45.6, DeiT supervised on ImageNet 46.1, random init 25.4).

Recipe (BEiT's self-supervised ADE20k fine-tuning, which the paper follows): 512 crops from a
0.5-2.0 rescale of (2048, 512) with cat_max_ratio 0.75, flip, photometric distortion; AdamW
lr 7e-4 (tune), wd 0.05, layer decay 0.65, poly decay (power 1, to 0) after 1500 warmup
iterations; 160k iterations x 16 images; drop path 0.1; UPerHead 768 channels + auxiliary FCN
head (0.4); sliding-window test, 512 crop, stride 341.

Set the encoder with --weights runs/pretrain_ade/encoder.safetensors (or --set model.weights=...)
and the data with --data-root $ADE/ADEChallengeData2016.
"""

from transfer.segmentation.config import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    SegConfig,
    SolverConfig,
)

config = SegConfig(
    model=ModelConfig(arch="vit_base", weights=None, drop_path=0.1, channels=768, aux_channels=256, aux_weight=0.4),
    data=DataConfig(
        root="data/ade20k/ADEChallengeData2016",
        num_classes=150,
        reduce_zero_label=True,
        crop_size=(512, 512),
        scale=(2048, 512),
        ratio_range=(0.5, 2.0),
        cat_max_ratio=0.75,
    ),
    optim=OptimConfig(
        lr=7e-4, weight_decay=0.05, layer_decay=0.65, schedule="poly", poly_power=1.0, final_lr_ratio=0.0,
        warmup_steps=1500, warmup_start=1e-6,
    ),
    solver=SolverConfig(iterations=160_000, batch_size=16),
    eval=EvalConfig(mode="slide", crop=(512, 512), stride=(341, 341), every=16_000),
    run=RunConfig(output_dir="runs/seg_splitmask_vitb_ade20k", log_every=50, ckpt_every_steps=2000),
)
