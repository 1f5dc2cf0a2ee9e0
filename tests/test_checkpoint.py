"""Checkpoint interop: every supported layout, built here independently from a source encoder, loads
into a fresh encoder that then computes what the source computed; mismatches and unsafe pickles fail
with messages that say what the file is and what to do; exports load into timm strictly."""

from __future__ import annotations

import argparse
import json
import logging

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer as TimmViT

from ssl_backbones import (
    ArchitectureMismatchError,
    CheckpointFormatError,
    export_encoder,
    load_encoder_weights,
    load_exported_encoder,
    read_checkpoint,
)
from ssl_backbones.pos_embed import sincos_2d_pos_embed
from ssl_backbones.vit import VisionTransformer

D, HEADS, DEPTH, P = 64, 2, 2, 8


def tiny(seed: int = 0, **kw) -> VisionTransformer:
    torch.manual_seed(seed)
    args = dict(img_size=32, patch_size=P, embed_dim=D, depth=DEPTH, num_heads=HEADS)
    args.update(kw)
    return VisionTransformer(**args).eval()


def randomized(enc: VisionTransformer, seed: int = 1) -> VisionTransformer:
    """Perturb every trainable tensor (norms, biases, layer scale too) so nothing equals its init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in enc.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return enc


def images(size: int = 32, seed: int = 5) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def assert_same_features(a: VisionTransformer, b: torch.nn.Module, size: int = 32) -> None:
    x = images(size)
    with torch.no_grad():
        fa, fb = a.forward_features(x), b.forward_features(x)
    assert torch.allclose(fa, fb, atol=1e-6), (fa - fb).abs().max()


def sd_of(enc: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in enc.state_dict().items()}


# ------------------------------------------------------------------ supported layouts


def test_our_pretraining_checkpoint(tmp_path):
    src = randomized(tiny(init_values=0.1))
    model = {f"encoder.{k}": v for k, v in sd_of(src).items()}
    model.update(
        {
            "decoder.blocks.0.mlp.fc1.weight": torch.randn(8, 4),
            "decoder_pred.weight": torch.randn(8, 4),
            "mask_token": torch.randn(1, 1, D),
            "tokenizer.codebook": torch.randn(16, 4),
            "head.weight": torch.randn(16, D),
        }
    )
    meta = dict(arch="custom", patch_size=P, pos_embed="sincos", method="splitmask", dataset="demo",
                epochs=1, img_size=32, embed_dim=D, depth=DEPTH, num_heads=HEADS)
    ckpt = {"model": model, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}, "step": 7,
            "epoch": 1, "config": {"lr": 1e-3}, "meta": meta}
    torch.save(ckpt, tmp_path / "last.pth")

    dst = tiny(seed=3, init_values=0.1)
    report = load_encoder_weights(dst, tmp_path / "last.pth")
    assert_same_features(src, dst)
    assert "splitmask" in report.source_format
    for k in ("decoder.blocks.0.mlp.fc1.weight", "decoder_pred.weight", "mask_token", "tokenizer.codebook", "head.weight"):
        assert k in report.dropped
    assert not report.missing and not report.unexpected
    assert report.dropped["encoder.pos_embed"].startswith("ignored: fixed sin-cos in use")


def test_mae_checkpoint_with_namespace_args(tmp_path):
    src = randomized(tiny())  # MAE's encoder: fixed sin-cos table with a zero cls slot
    sd = sd_of(src)
    sd.update(
        {
            "mask_token": torch.randn(1, 1, 32),
            "decoder_embed.weight": torch.randn(32, D),
            "decoder_pos_embed": torch.randn(1, 17, 32),
            "decoder_blocks.0.norm1.weight": torch.randn(32),
            "decoder_norm.weight": torch.randn(32),
            "decoder_pred.weight": torch.randn(3 * P * P, 32),
        }
    )
    args = argparse.Namespace(model="mae_vit_tiny_patch8", input_size=32, mask_ratio=0.75, norm_pix_loss=True,
                              lr=None, device="cuda", resume="")
    path = tmp_path / "mae_pretrain.pth"
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": []}, "epoch": 399,
                "scaler": {"scale": 65536.0}, "args": args}, path)

    dst = tiny(seed=3)
    report = load_encoder_weights(dst, path)  # no allow_pickle: the Namespace is allowed
    assert_same_features(src, dst)
    assert "MAE" in report.source_format
    assert {"decoder_embed.weight", "decoder_pos_embed", "mask_token", "decoder_pred.weight"} <= set(report.dropped)
    assert report.dropped["pos_embed"] == "ignored: fixed sin-cos in use (same table as the checkpoint's)"

    # Into a learned-position encoder at another size the sin-cos table is recomputed, not interpolated.
    big = tiny(seed=4, img_size=64, pos_embed="learned")
    report = load_encoder_weights(big, path)
    assert torch.allclose(big.pos_embed[0, 1:], sincos_2d_pos_embed(D, 8, 8), atol=1e-6)
    assert torch.all(big.pos_embed[0, 0] == 0)
    assert "recomputed" in report.resized["pos_embed"]


def to_beit_layout(enc: VisionTransformer) -> dict[str, torch.Tensor]:
    """Write a timm-named encoder the way BEiT's code names things, independently of the loader."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sd_of(enc).items():
        if k.endswith("ls1.gamma"):
            out["beit." + k.replace("ls1.gamma", "gamma_1")] = v
        elif k.endswith("ls2.gamma"):
            out["beit." + k.replace("ls2.gamma", "gamma_2")] = v
        elif k.endswith("attn.qkv.bias"):
            q, kb, vb = v.chunk(3)
            assert torch.all(kb == 0)  # BEiT has no key bias
            out["beit." + k.replace("qkv.bias", "q_bias")] = q
            out["beit." + k.replace("qkv.bias", "v_bias")] = vb
        else:
            out["beit." + k] = v
    n_rel = (2 * 4 - 1) ** 2 + 3
    for i in range(enc.depth):
        out[f"beit.blocks.{i}.attn.relative_position_bias_table"] = torch.randn(n_rel, HEADS)
        out[f"beit.blocks.{i}.attn.relative_position_index"] = torch.randint(0, n_rel, (17, 17))
    out["beit.rel_pos_bias.relative_position_bias_table"] = torch.randn(n_rel, HEADS)
    out["beit.mask_token"] = torch.randn(1, 1, D)
    out["lm_head.weight"] = torch.randn(8192, D)
    out["lm_head.bias"] = torch.randn(8192)
    return out


def test_beit_checkpoint(tmp_path):
    src = randomized(tiny(init_values=0.1, pos_embed="learned"))
    with torch.no_grad():
        for blk in src.blocks:
            blk.attn.qkv.bias[D : 2 * D] = 0  # BEiT's attention has no key bias
    beit = to_beit_layout(src)
    path = tmp_path / "beit.pth"
    torch.save({"module": beit, "epoch": 3, "args": argparse.Namespace(model="beit_tiny")}, path)

    dst = tiny(seed=3, init_values=0.1, pos_embed="learned")
    report = load_encoder_weights(dst, path)
    assert_same_features(src, dst)
    assert "BEiT" in report.source_format
    assert not report.missing and not report.unexpected

    # The fused bias against a hand-built q/k/v computation with BEiT's separate biases.
    x = torch.randn(1, 5, D)
    W = beit["beit.blocks.1.attn.qkv.weight"]
    q = x @ W[:D].T + beit["beit.blocks.1.attn.q_bias"]
    k = x @ W[D : 2 * D].T
    v = x @ W[2 * D :].T + beit["beit.blocks.1.attn.v_bias"]
    with torch.no_grad():
        assert torch.allclose(dst.blocks[1].attn.qkv(x), torch.cat([q, k, v], dim=-1), atol=1e-6)
    assert torch.equal(dst.blocks[0].ls1.gamma, beit["beit.blocks.0.gamma_1"])
    assert torch.equal(dst.blocks[1].ls2.gamma, beit["beit.blocks.1.gamma_2"])

    rel = [k for k in report.dropped if "relative_position" in k]
    assert len(rel) == 2 * DEPTH + 1
    assert all("relative position bias" in report.dropped[k] for k in rel)
    assert {"lm_head.weight", "beit.mask_token"} <= set(report.dropped)


def test_timm_beit_model_matches(tmp_path):
    """An independent BEiT implementation (timm's Beit: gamma_1, q_bias/v_bias, relative tables)."""
    from timm.models.beit import Beit

    torch.manual_seed(0)
    beit = Beit(img_size=32, patch_size=P, embed_dim=D, depth=DEPTH, num_heads=HEADS, init_values=0.1,
                use_abs_pos_emb=True, use_rel_pos_bias=False, num_classes=0, global_pool="token",
                use_fc_norm=False).eval()
    randomized(beit)
    torch.save({"model": sd_of(beit)}, tmp_path / "timm_beit.pth")
    dst = tiny(seed=3, init_values=0.1, pos_embed="learned")
    report = load_encoder_weights(dst, tmp_path / "timm_beit.pth")
    assert not report.missing and not report.unexpected
    assert_same_features(dst, beit)


def test_beit_without_absolute_positions_warns(tmp_path, caplog):
    src = randomized(tiny(init_values=0.1))
    with torch.no_grad():
        for blk in src.blocks:
            blk.attn.qkv.bias[D : 2 * D] = 0
    beit = {k: v for k, v in to_beit_layout(src).items() if k != "beit.pos_embed"}
    torch.save({"model": beit}, tmp_path / "beit_relpos.pth")
    dst = tiny(seed=3, init_values=0.1)
    with caplog.at_level(logging.WARNING, logger="target_ssl"):
        report = load_encoder_weights(dst, tmp_path / "beit_relpos.pth")
    assert any("relative position bias" in n for n in report.notes)
    assert "relative position bias" in caplog.text
    assert_same_features(src, dst)  # the source used the same sin-cos table


def test_deit_distilled_state_dict_with_module_prefix(tmp_path):
    src = randomized(tiny(pos_embed="learned"))
    sd = sd_of(src)
    pos = sd.pop("pos_embed")  # DeiT distilled: slots for cls and dist, then the patches
    sd["pos_embed"] = torch.cat([pos[:, :1], torch.randn(1, 1, D), pos[:, 1:]], dim=1)
    sd.update(dist_token=torch.randn(1, 1, D), **{"head.weight": torch.randn(10, D), "head.bias": torch.randn(10),
                                                  "head_dist.weight": torch.randn(10, D), "head_dist.bias": torch.randn(10)})
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "deit.pth")

    dst = tiny(seed=3, pos_embed="learned")
    report = load_encoder_weights(dst, tmp_path / "deit.pth")
    assert_same_features(src, dst)
    assert {"module.dist_token", "module.head.weight", "module.head_dist.weight"} <= set(report.dropped)
    assert "distillation" in report.dropped["module.dist_token"]
    assert not report.missing and not report.unexpected


def test_timm_model_safetensors(tmp_path):
    torch.manual_seed(0)
    timm_vit = TimmViT(img_size=32, patch_size=P, embed_dim=D, depth=DEPTH, num_heads=HEADS, num_classes=10).eval()
    randomized(timm_vit)
    save_file(sd_of(timm_vit), str(tmp_path / "model.safetensors"))

    dst = tiny(seed=3, pos_embed="learned")
    report = load_encoder_weights(dst, tmp_path / "model.safetensors")
    assert_same_features(dst, timm_vit)
    assert {"head.weight", "head.bias"} <= set(report.dropped)
    assert set(read_checkpoint(tmp_path / "model.safetensors")) == set(timm_vit.state_dict())


def test_missing_layer_scale_and_qkv_bias_are_filled_exactly(tmp_path):
    src = randomized(tiny(qkv_bias=False))
    torch.save(sd_of(src), tmp_path / "plain.pth")
    dst = randomized(tiny(seed=3, init_values=0.1), seed=9)
    report = load_encoder_weights(dst, tmp_path / "plain.pth")
    assert_same_features(src, dst)
    assert "blocks.0.ls1.gamma" in report.converted and "blocks.1.attn.qkv.bias" in report.converted


# ------------------------------------------------------------------ position embeddings


def test_learned_pos_embed_resampled_to_a_larger_grid(tmp_path):
    src = randomized(tiny(pos_embed="learned"))  # 32 px, 4x4 grid
    torch.save({"state_dict": sd_of(src)}, tmp_path / "learned.pth")
    dst = tiny(seed=3, img_size=64, pos_embed="learned")  # 8x8 grid
    report = load_encoder_weights(dst, tmp_path / "learned.pth")

    grid = src.pos_embed[:, 1:].detach().reshape(1, 4, 4, D).permute(0, 3, 1, 2)
    expect = F.interpolate(grid, size=(8, 8), mode="bicubic", align_corners=False)
    expect = expect.permute(0, 2, 3, 1).reshape(1, 64, D)
    assert torch.allclose(dst.pos_embed[:, 1:], expect, atol=1e-6)
    assert torch.equal(dst.pos_embed[:, :1], src.pos_embed[:, :1])
    assert report.resized["pos_embed"] == "4x4 -> 8x8 (bicubic)"
    assert_same_features(src, dst, size=64)  # the source resamples the same way on the fly


def test_learned_pos_embed_into_sincos_encoder_is_reported(tmp_path):
    src = randomized(tiny(pos_embed="learned"))
    torch.save(sd_of(src), tmp_path / "learned.pth")
    dst = tiny(seed=3)
    before = dst.pos_embed.detach().clone()
    report = load_encoder_weights(dst, tmp_path / "learned.pth")
    assert torch.equal(dst.pos_embed, before)
    assert report.dropped["pos_embed"] == "ignored: fixed sin-cos in use"
    assert any("pos_embed='learned'" in n for n in report.notes)
    assert "pos_embed" not in report.missing


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "src_kw, dst_kw, expected",
    [
        (dict(embed_dim=128), {}, ["128 wide", "2 blocks", "64 wide", "embed_dim=128"]),
        (dict(depth=3), {}, ["3 blocks", "2 blocks", "depth=3"]),
        (dict(patch_size=4), {}, ["patch 4", "patch size 4 vs 8"]),
        (dict(init_values=0.1), {}, ["layer scale", "init_values"]),
        (dict(mlp_ratio=2.0), {}, ["blocks.0.mlp.fc1.weight", "(128, 64)", "(256, 64)"]),
    ],
)
def test_architecture_mismatch_names_the_checkpoint(tmp_path, src_kw, dst_kw, expected):
    src = tiny(**src_kw)
    torch.save({"model": sd_of(src)}, tmp_path / "other.pth")
    with pytest.raises(ArchitectureMismatchError) as err:
        load_encoder_weights(tiny(seed=3, **dst_kw), tmp_path / "other.pth")
    msg = str(err.value)
    assert "other.pth" in msg
    for piece in expected:
        assert piece in msg, msg


def test_mismatch_maps_shapes_to_a_named_architecture(tmp_path):
    # Only the tensors that reveal the size: a ViT-S/16 (384 wide, 12 blocks) into the tiny model.
    sd = {"patch_embed.proj.weight": torch.zeros(384, 3, 16, 16), "cls_token": torch.zeros(1, 1, 384),
          "blocks.11.norm1.weight": torch.zeros(384)}
    torch.save(sd, tmp_path / "vits.pth")
    with pytest.raises(ArchitectureMismatchError) as err:
        load_encoder_weights(tiny(patch_size=16), tmp_path / "vits.pth")
    assert "vit_small (384 wide, 12 blocks, patch 16)" in str(err.value)
    assert "--arch vit_small" in str(err.value)


class NotAllowed:
    """A class a weights-only unpickler must refuse."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def test_pickled_objects_need_allow_pickle(tmp_path):
    src = randomized(tiny())
    path = tmp_path / "legacy.pth"
    torch.save({"model": sd_of(src), "extra": NotAllowed()}, path)
    with pytest.raises(CheckpointFormatError) as err:
        read_checkpoint(path)
    assert "--allow-pickle" in str(err.value) and "legacy.pth" in str(err.value)
    assert "NotAllowed" in str(err.value)
    with pytest.raises(CheckpointFormatError):
        load_encoder_weights(tiny(seed=3), path)

    dst = tiny(seed=3)
    load_encoder_weights(dst, path, allow_pickle=True)
    assert_same_features(src, dst)


def test_missing_file_and_unrecognised_content(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        read_checkpoint(tmp_path / "nothere.pth")
    torch.save({"linear.weight": torch.randn(3, 3)}, tmp_path / "resnet.pth")
    for enc in (tiny(), tiny(init_values=0.1)):  # layer scale would be filled in; still nothing matched
        with pytest.raises(CheckpointFormatError, match="no encoder weights found in .*resnet.pth"):
            load_encoder_weights(enc, tmp_path / "resnet.pth")
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointFormatError, match="broken.pth"):
        read_checkpoint(tmp_path / "broken.pth")


def test_strict_refuses_missing_keys(tmp_path):
    src = randomized(tiny())
    sd = {k: v for k, v in sd_of(src).items() if not k.startswith("norm.")}
    torch.save(sd, tmp_path / "nonorm.pth")
    dst = tiny(seed=3)
    before = sd_of(dst)
    with pytest.raises(ArchitectureMismatchError, match="norm.weight"):
        load_encoder_weights(dst, tmp_path / "nonorm.pth", strict=True)
    assert all(torch.equal(v, before[k]) for k, v in dst.state_dict().items())  # untouched on failure
    report = load_encoder_weights(tiny(seed=3), tmp_path / "nonorm.pth")
    assert report.missing == ["norm.weight", "norm.bias"]
    assert "missing" in str(report)

    # Without the patch projection the wrapper prefix is still recognised (most keys carry it).
    sd = {f"module.encoder.{k}": v for k, v in sd_of(src).items() if not k.startswith("patch_embed.")}
    sd["module.extra_thing"] = torch.zeros(1)
    torch.save(sd, tmp_path / "noproj.pth")
    report = load_encoder_weights(tiny(seed=3), tmp_path / "noproj.pth")
    assert report.missing == ["patch_embed.proj.weight", "patch_embed.proj.bias"]
    assert "module.extra_thing" in report.dropped and "blocks.0.attn.qkv.weight" in report.loaded


# ------------------------------------------------------------------ export


@pytest.mark.parametrize("pos_embed, init_values", [("sincos", None), ("learned", 0.1)])
def test_export_loads_into_timm_and_back(tmp_path, pos_embed, init_values):
    src = randomized(tiny(pos_embed=pos_embed, init_values=init_values))
    out = export_encoder(src, tmp_path / "run" / "encoder", {"method": "mae", "dataset": "demo", "epochs": 2})
    assert out == tmp_path / "run" / "encoder.safetensors"
    meta = json.loads((tmp_path / "run" / "encoder.json").read_text())
    assert (meta["method"], meta["dataset"], meta["epochs"]) == ("mae", "demo", 2)
    assert (meta["embed_dim"], meta["depth"], meta["num_heads"], meta["patch_size"]) == (D, DEPTH, HEADS, P)
    assert (meta["img_size"], meta["pos_embed"], meta["format_version"]) == (32, pos_embed, 1)
    weights = read_checkpoint(out)

    import timm

    named = timm.create_model(meta["timm_model"], pretrained=False, **meta["timm_kwargs"]).eval()
    named.load_state_dict(weights, strict=True)
    direct = TimmViT(img_size=32, patch_size=P, embed_dim=D, depth=DEPTH, num_heads=HEADS, num_classes=0,
                     init_values=init_values).eval()
    direct.load_state_dict(weights, strict=True)
    x = images()
    with torch.no_grad():
        ours = src.forward_features(x)
        assert torch.allclose(named.forward_features(x), ours, atol=1e-6)
        assert torch.allclose(direct.forward_features(x), ours, atol=1e-6)
        assert torch.allclose(direct(x), src(x), atol=1e-6)  # pooled: timm's cls pre-logits

    back = load_exported_encoder(tmp_path / "run" / "encoder.safetensors", drop_path_rate=0.1).eval()
    assert back.blocks[1].drop_path1.drop_prob == pytest.approx(0.1)
    assert_same_features(src, back)
    report = load_encoder_weights(tiny(seed=3, pos_embed=pos_embed, init_values=init_values), out, strict=True)
    assert "export" in report.source_format


def test_export_of_a_named_size_gets_its_timm_name(tmp_path):
    enc = tiny(embed_dim=192, num_heads=3, depth=12, patch_size=16, img_size=32)  # vit_tiny sizes
    export_encoder(enc, tmp_path / "encoder.safetensors", {"arch": "vit_tiny"})
    meta = json.loads((tmp_path / "encoder.json").read_text())
    assert meta["timm_model"] == "vit_tiny_patch16_224" and meta["arch"] == "vit_tiny"
    with pytest.raises(ValueError, match="embed_dim"):
        export_encoder(enc, tmp_path / "bad", {"embed_dim": 384})


def test_learned_positions_from_pretraining_give_way_to_sincos_for_detection(tmp_path) -> None:
    """The paper's setting: pretrain with learned absolute positions, transfer with sine-cosine ones
    at another resolution; every other weight carries over and nothing is reported missing."""
    src = randomized(tiny(seed=5, pos_embed="learned"))
    path = tmp_path / "enc.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    dst = tiny(seed=6, img_size=64, pos_embed="sincos")
    report = load_encoder_weights(dst, path)
    assert "pos_embed" not in report.missing
    for k, v in dst.state_dict().items():
        if k != "pos_embed":
            assert torch.equal(v, src.state_dict()[k]), k
