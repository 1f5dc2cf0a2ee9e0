"""The ViT encoder: sin-cos table, any-resolution forward, subset forward, intermediates, timm parity."""

from __future__ import annotations

import math

import pytest
import timm
import torch

from ssl_backbones.pos_embed import sincos_2d_pos_embed
from ssl_backbones.vit import create_vit, default_out_indices


def tiny(**kw):
    kw = {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 64, **kw}
    return create_vit("vit_tiny", **kw).eval()


def reference_sincos(dim: int, h: int, w: int) -> torch.Tensor:
    """The MAE formula written out element by element (independent of the vectorised code)."""
    quarter = dim // 4
    table = torch.zeros(h * w, dim, dtype=torch.float64)
    for row in range(h):
        for col in range(w):
            t = row * w + col  # row-major, as patch embedding flattens
            for k in range(quarter):
                omega = 1.0 / 10000 ** (k / quarter)
                table[t, k] = math.sin(col * omega)
                table[t, quarter + k] = math.cos(col * omega)
                table[t, 2 * quarter + k] = math.sin(row * omega)
                table[t, 3 * quarter + k] = math.cos(row * omega)
    return table.float()


@pytest.mark.parametrize("hw", [(4, 4), (3, 5), (7, 2)])
def test_sincos_matches_mae_formula(hw):
    h, w = hw
    torch.testing.assert_close(sincos_2d_pos_embed(32, h, w), reference_sincos(32, h, w), atol=1e-6, rtol=0)


def test_sincos_stored_table_has_zero_cls_slot_and_is_frozen():
    m = tiny(pos_embed="sincos")
    assert not m.pos_embed.requires_grad
    assert torch.equal(m.pos_embed[0, 0], torch.zeros(64))
    torch.testing.assert_close(m.pos_embed[0, 1:], reference_sincos(64, 4, 4), atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [(224, 224), (512, 640)])
def test_encoder_runs_at_any_resolution(size):
    m = create_vit("vit_tiny", depth=1).eval()
    with torch.no_grad():
        out = m.forward_features(torch.randn(1, 3, *size))
    assert out.shape == (1, 1 + (size[0] // 16) * (size[1] // 16), 192)
    assert torch.isfinite(out).all()


def test_non_square_grid_uses_table_for_that_grid():
    m = tiny()
    x = torch.randn(2, 3, 48, 80)  # grid 3 x 5
    tokens, grid = m.embed(x)
    raw, _ = m.patch_embed(x)
    assert grid == (3, 5)
    torch.testing.assert_close(tokens - raw, reference_sincos(64, 3, 5).expand(2, -1, -1), atol=1e-5, rtol=0)


def test_learned_pos_embed_is_resampled_bicubically():
    m = tiny(pos_embed="learned")
    assert m.pos_embed.requires_grad
    x = torch.randn(1, 3, 96, 128)  # grid 6 x 8, stored 4 x 4
    tokens, _ = m.embed(x)
    raw, _ = m.patch_embed(x)
    grid = m.pos_embed[:, 1:].reshape(1, 4, 4, 64).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(6, 8), mode="bicubic", align_corners=False)
    expected = expected.permute(0, 2, 3, 1).reshape(1, 48, 64)
    torch.testing.assert_close(tokens - raw, expected, atol=1e-5, rtol=0)


def test_subset_forward_with_all_indices_equals_full_forward():
    m = tiny()
    x = torch.randn(2, 3, 64, 64)
    ids = torch.arange(16).expand(2, -1)
    torch.testing.assert_close(m.forward_features(x, ids_keep=ids), m.forward_features(x))


def test_subset_forward_sees_only_its_tokens():
    # Permuting the kept tokens permutes the outputs: no hidden dependence on dropped patches.
    m = tiny()
    x = torch.randn(1, 3, 64, 64)
    ids = torch.tensor([[1, 5, 9, 12]])
    out = m.forward_features(x, ids_keep=ids)
    x2 = x.clone()
    x2[..., 48:, 48:] += 10.0  # patch 15 is not kept
    torch.testing.assert_close(m.forward_features(x2, ids_keep=ids), out)
    perm = torch.tensor([[12, 1, 9, 5]])
    out_perm = m.forward_features(x, ids_keep=perm)
    torch.testing.assert_close(out_perm[:, 1:], out[:, 1:][:, [3, 0, 2, 1]], atol=1e-5, rtol=1e-5)


def test_intermediates_are_block_outputs_as_maps():
    m = tiny()
    x = torch.randn(2, 3, 48, 80)
    maps = m.forward_intermediates(x, [0, -1])
    # Independent path: run the blocks by hand.
    tokens, _ = m.embed(x)
    z = torch.cat([(m.cls_token + m.pos_embed[:, :1]).expand(2, -1, -1), tokens], 1)
    z0 = m.blocks[0](z)
    z1 = m.blocks[1](z0)
    for got, want in zip(maps, (z0, z1)):
        assert got.shape == (2, 64, 3, 5)
        torch.testing.assert_close(got, want[:, 1:].transpose(1, 2).reshape(2, 64, 3, 5))


def test_grad_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    a = tiny()
    b = tiny(grad_checkpointing=True)
    b.load_state_dict(a.state_dict())
    a.train()
    b.train()
    x = torch.randn(2, 3, 64, 64)
    a.forward_features(x).sum().backward()
    b.forward_features(x).sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        if pa.grad is not None:
            torch.testing.assert_close(pa.grad, pb.grad, msg=n)


def test_state_dict_loads_into_timm_and_gives_same_features():
    m = tiny(img_size=64)
    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=2, num_classes=0
    ).eval()
    ref.load_state_dict(m.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(m.forward_features(x), ref.forward_features(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(m(x), ref(x), atol=1e-6, rtol=0)


def test_layer_scale_and_drop_path_are_configured():
    m = create_vit("vit_tiny", depth=4, init_values=0.1, drop_path_rate=0.3)
    assert torch.allclose(m.blocks[0].ls1.gamma, torch.full((192,), 0.1))
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in m.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_default_taps_match_reference():
    assert default_out_indices(12) == [3, 5, 7, 11]
    assert default_out_indices(24) == [7, 11, 15, 23]


def test_bad_input_size_and_arch_errors():
    m = tiny()
    with pytest.raises(ValueError, match="multiple of the patch size"):
        m.forward_features(torch.randn(1, 3, 50, 64))
    with pytest.raises(ValueError, match="vit_small"):  # a ConfigError, a ValueError
        create_vit("vit_smal")


def test_sincos_cache_is_bounded_and_equals_the_uncached_table():
    from ssl_backbones.pos_embed import SINCOS_CACHE_SIZE, cached_sincos_2d_pos_embed

    cached_sincos_2d_pos_embed.cache_clear()
    m = tiny(pos_embed="sincos")
    x_sizes = [(16 * h, 16 * w) for h in range(1, 9) for w in range(1, 9) if (h, w) != (4, 4)]  # 63 grids
    for hw in x_sizes:
        x = torch.randn(1, 3, *hw)
        tokens, grid = m.embed(x)
        raw, _ = m.patch_embed(x)
        torch.testing.assert_close(tokens - raw, reference_sincos(64, *grid)[None], atol=1e-5, rtol=0)
    info = cached_sincos_2d_pos_embed.cache_info()
    assert info.currsize == SINCOS_CACHE_SIZE < len(x_sizes) and info.misses == len(x_sizes)
    m.embed(torch.zeros(1, 3, 128, 128))  # the most recent grid is still cached
    assert cached_sincos_2d_pos_embed.cache_info().hits == 1


def test_sincos_table_made_under_inference_mode_is_a_normal_tensor():
    from ssl_backbones.pos_embed import cached_sincos_2d_pos_embed

    with torch.inference_mode():
        table = cached_sincos_2d_pos_embed(64, 5, 3, torch.device("cpu"))
    # The cache outlives the inference call; an inference tensor could not be saved for backward
    # (e.g. multiplied by a trainable scale) in a later training step.
    assert not table.is_inference() and not table.requires_grad
    assert table.shape == (1, 15, 64)
