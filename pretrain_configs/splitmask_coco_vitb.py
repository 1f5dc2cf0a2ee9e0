"""SplitMask, ViT-B/16, on COCO's own train2017 images (no labels): the paper's COCO recipe.

Block-wise masking (50% split, blocks 16..75 patches at 14x14), a 2-block decoder, InfoNCE at
tau 0.2 with weight 1; random-projection visual words (8192 x 8x8 px at half resolution); BEiT's
optimisation (AdamW (0.9, 0.999), wd 0.05, lr 1.5e-3 at batch 2048 scaled linearly, warmup 10 of 300
epochs-equivalent, cosine, clip 3.0, drop path 0.1); 3,000 epochs (the constant-updates rule,
Table 3 of the paper), 64 images per process (32 processes = 2048). Point it at your copy with
`--data-root` (or $TARGET_SSL_COCO_ROOT).

Positions: sine-cosine here, so the encoder runs at any resolution unchanged. The paper's models
pretrained with learned absolute positions and replaced them by sine-cosine for detection;
`--set model.pos_embed=learned` is that setting (the transfer tools drop the learned table when they
build a sine-cosine encoder, and resample it for a learned one).
"""

from engine.config import OptimConfig, RunConfig
from pretrain.config import DataConfig, ModelConfig, PretrainConfig, ScheduleConfig, TokenizerConfig

config = PretrainConfig(
    data=DataConfig(name="coco", img_size=224, augment="auto"),
    tokenizer=TokenizerConfig(kind="random_projection", vocab_size=8192, patch_size=8, downsample=2),
    model=ModelConfig(
        method="splitmask", arch="vit_base", patch_size=16, pos_embed="sincos", drop_path=0.1,
        decoder_depth=2, tau=0.2, contrastive_weight=1.0,
    ),
    schedule=ScheduleConfig(epochs=3000, batch_size=64, accum_iter=1, blr=1.5e-3 * 256 / 2048),
    optim=OptimConfig(
        lr=1.5e-3, weight_decay=0.05, betas=(0.9, 0.999), clip_grad=3.0, schedule="cosine", warmup_start=0.0,
    ),
    run=RunConfig(output_dir="runs/pretrain_splitmask_coco_vitb", ckpt_every_steps=1000),
)
