"""MAE, ViT-B/16, on COCO's train2017 images: encoder on 25% visible patches (uniform masking),
no drop path, crops of 20-100% of the image, 5% warmup (40 of 800 epochs); a 512-wide 8-block decoder with fixed sin-cos positions, normalised-pixel targets; MAE's optimiser
(AdamW (0.9, 0.95), wd 0.05, base lr 1.5e-4 per 256 images, no clipping); 3,000 epochs."""

import dataclasses

from pretrain_configs.splitmask_coco_vitb import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(
        base.model, method="mae", drop_path=0.0, mae_decoder_dim=512, mae_decoder_depth=8, mae_decoder_heads=16,
        mae_mask_ratio=0.75, norm_pix_loss=True,
    ),
    schedule=dataclasses.replace(base.schedule, blr=1.5e-4),
    optim=dataclasses.replace(base.optim, betas=(0.9, 0.95), clip_grad=None),
    run=dataclasses.replace(base.run, output_dir="runs/pretrain_mae_coco_vitb"),
)
