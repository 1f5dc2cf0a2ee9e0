"""ImageNet linear probe of a ViT-B (Table 8: SplitMask 46.5 vs BEiT 41.0 top-1, 300-epoch pretraining).

MAE's linear probe (BatchNorm without affine + linear head, LARS, base lr 0.1 per 256, batch
16384, 90 epochs with 10 warmup, weight decay 0) on the cls token of the last block; features are
cached once from centre crops (see transfer.classification.frozen). `--set probe.all_blocks=true`
probes every block in one run and draws Figure 5's accuracy by block; `--mode knn` gives DINO's
k-NN (k = 20, T = 0.07) instead.

    python tools/train_cls.py --config linear_probe_imagenet_vitb.py --weights ENCODER --data-root $IMAGENET
"""

from transfer.classification.config import ClsConfig, DataConfig, ModelConfig, ProbeConfig, RunConfig

config = ClsConfig(
    mode="linear",
    model=ModelConfig(arch="vit_base", weights=None, drop_path=0.0),
    data=DataConfig(root="data/imagenet", img_size=224),
    probe=ProbeConfig(feature="cls", epochs=90, batch_size=16384, base_lr=0.1, weight_decay=0.0, warmup_epochs=10,
                      optimizer="lars", batch_features=256),
    run=RunConfig(output_dir="runs/linear_probe_imagenet_vitb"),
)
