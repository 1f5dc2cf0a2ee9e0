"""Window attention, decomposed / BEiT relative positions, and the patch-only ViTDet path."""

from __future__ import annotations

import pytest
import torch

from ssl_backbones import load_encoder_weights
from ssl_backbones.rel_pos import beit_relative_position_index, decomposed_rel_pos_bias
from ssl_backbones.vit import VisionTransformer
from ssl_backbones.window_attention import RelPosAttention, window_partition, window_unpartition

TINY = dict(embed_dim=64, depth=2, num_heads=2, img_size=64)


def _vit(**kw) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(**TINY, **kw).eval()


def _randomise_tables(model: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "rel_pos" in name or "relative_position" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def test_pad_windows_unpad_is_identity_and_windows_are_the_padded_tiles() -> None:
    x = torch.randn(2, 5, 7, 3)
    windows, padded = window_partition(x, 3)
    assert padded == (6, 9) and windows.shape == (2 * 2 * 3, 3, 3, 3)
    torch.testing.assert_close(window_unpartition(windows, 3, padded, (5, 7)), x, rtol=0, atol=0)
    # Independent check: window (b, r, c) is the padded map's tile at rows 3r.., cols 3c..
    xp = torch.zeros(2, 6, 9, 3)
    xp[:, :5, :7] = x
    torch.testing.assert_close(windows[1 * 6 + 1 * 3 + 2], xp[1, 3:6, 6:9], rtol=0, atol=0)
    assert windows[5, 2:].abs().sum() == 0  # bottom padding of the last row of windows


def test_one_window_covering_the_grid_equals_global_attention() -> None:
    x = torch.randn(2, 3, 64, 64)
    plain = _vit(patch_only=True)
    windowed = _vit(patch_only=True, window_size=4, global_blocks=())
    windowed.load_state_dict(plain.state_dict(), strict=True)
    torch.testing.assert_close(windowed.forward_intermediates(x, [0, 1]), plain.forward_intermediates(x, [0, 1]))
    # Same with trained decomposed tables: a 4x4 window on the 4x4 grid is the global block.
    win_rel = _vit(patch_only=True, window_size=4, global_blocks=(), rel_pos="decomposed")
    glob_rel = _vit(patch_only=True, window_size=0, rel_pos="decomposed", rel_pos_grid=4)
    _randomise_tables(win_rel)
    glob_rel.load_state_dict(win_rel.state_dict(), strict=True)
    out_w, out_g = win_rel.forward_intermediates(x, [1]), glob_rel.forward_intermediates(x, [1])
    torch.testing.assert_close(out_w, out_g)
    assert not torch.allclose(out_w[0], plain.forward_intermediates(x, [1])[0], atol=1e-3)


def test_windows_are_independent_of_other_windows() -> None:
    model = _vit(patch_only=True, window_size=2, global_blocks=())
    x = torch.randn(1, 3, 64, 64)
    y = x.clone()
    y[..., 32:, 32:] = torch.randn(1, 3, 32, 32)  # change only the bottom-right 2x2-patch window
    a, b = model.forward_intermediates(x, [1])[0], model.forward_intermediates(y, [1])[0]
    torch.testing.assert_close(a[..., :2, :], b[..., :2, :])
    torch.testing.assert_close(a[..., :, :2], b[..., :, :2])
    assert not torch.allclose(a[..., 2:, 2:], b[..., 2:, 2:])


def test_decomposed_bias_equals_explicit_per_pair_sum() -> None:
    g = torch.Generator().manual_seed(0)
    h, w, C = 3, 4, 5
    q = torch.randn(2, 2, h * w, C, generator=g)
    rh, rw = torch.randn(2 * h - 1, C, generator=g), torch.randn(2 * w - 1, C, generator=g)
    bias = decomposed_rel_pos_bias(q, (h, w), (h, w), rh, rw)
    expected = torch.zeros_like(bias)
    for i in range(h):
        for j in range(w):
            for k in range(h):
                for m in range(w):
                    qv = q[:, :, i * w + j]
                    expected[:, :, i * w + j, k * w + m] = qv @ rh[i - k + h - 1] + qv @ rw[j - m + w - 1]
    torch.testing.assert_close(bias, expected)


def test_rel_pos_attention_is_softmax_of_scaled_logits_plus_bias() -> None:
    torch.manual_seed(0)
    attn = RelPosAttention(16, 2, rel_pos="decomposed", rel_pos_grid=(3, 3))
    _randomise_tables(attn)
    x = torch.randn(2, 9, 16)
    q, k, v = attn.qkv(x).reshape(2, 9, 3, 2, 8).permute(2, 0, 3, 1, 4)
    logits = q @ k.transpose(-1, -2) / 8**0.5 + decomposed_rel_pos_bias(q, (3, 3), (3, 3), attn.rel_pos_h, attn.rel_pos_w)
    ref = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 9, 16))
    torch.testing.assert_close(attn(x, (3, 3)), ref)


def test_beit_index_matches_hand_values() -> None:
    idx = beit_relative_position_index((2, 3), num_prefix=1)
    n_rel = 3 * 5
    # patch (0,0) -> (1,2): dy = -1 + 1 = 0, dx = -2 + 2 = 0 -> row 0; (1,2) -> (0,0): dy=2, dx=4 -> 2*5+4
    assert idx[1, 1 + 5] == 0 and idx[1 + 5, 1] == 14
    assert idx[3, 3] == 1 * 5 + 2  # same token: the centre offset
    assert idx[0, 4] == n_rel and idx[4, 0] == n_rel + 1 and idx[0, 0] == n_rel + 2


def test_zero_tables_compute_the_plain_encoder_and_checkpoints_load(tmp_path) -> None:
    plain = _vit()
    path = tmp_path / "plain.pth"
    torch.save(plain.state_dict(), path)
    for kind in ("decomposed", "beit"):
        model = _vit(patch_only=True, rel_pos=kind)
        report = load_encoder_weights(model, path)
        assert all("rel_pos" in k or "relative_position" in k for k in report.missing), report.missing
        x = torch.randn(1, 3, 64, 64)
        ref = _vit(patch_only=True)
        ref.load_state_dict(plain.state_dict())
        torch.testing.assert_close(model.forward_intermediates(x, [1]), ref.forward_intermediates(x, [1]))


def test_patch_only_path_drops_the_cls_token() -> None:
    with_cls, patch_only = _vit(), _vit(patch_only=True)
    patch_only.load_state_dict(with_cls.state_dict())
    x = torch.randn(1, 3, 64, 64)
    tokens, _ = with_cls.embed(x)
    ref = with_cls.blocks[0](tokens).transpose(1, 2).reshape(1, 64, 4, 4)  # blocks on patch tokens only
    torch.testing.assert_close(patch_only.forward_intermediates(x, [0])[0], ref)
    assert not torch.allclose(with_cls.forward_intermediates(x, [0])[0], ref)


def test_window_attention_needs_patch_only_and_valid_global_blocks() -> None:
    with pytest.raises(ValueError, match="patch_only"):
        VisionTransformer(**TINY, window_size=2)
    with pytest.raises(ValueError, match="global_blocks"):
        VisionTransformer(**TINY, window_size=2, patch_only=True, global_blocks=(0, 2))
    with pytest.raises(ValueError, match="default global blocks"):
        VisionTransformer(**TINY, window_size=2, patch_only=True)
