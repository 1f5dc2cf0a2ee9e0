"""BEiT relative position bias: geometric-progression resampling and loading from BEiT checkpoints."""

from __future__ import annotations

import numpy as np
import torch

from ssl_backbones import load_encoder_weights
from ssl_backbones.beit_rel_pos import _source_offsets, resample_beit_table
from ssl_backbones.rel_pos import beit_rel_pos_bias, beit_table_size
from ssl_backbones.vit import VisionTransformer


def _table(grid: tuple[int, int], heads: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(beit_table_size(grid), heads, generator=torch.Generator().manual_seed(seed))


def test_unchanged_size_is_exact() -> None:
    t = _table((5, 5))
    assert torch.equal(resample_beit_table(t, (5, 5), (5, 5)), t)


def test_resampling_keeps_centre_entries_and_cls_rows() -> None:
    src, dst = (7, 7), (16, 16)
    t = _table(src)
    new = resample_beit_table(t, src, dst)
    assert new.shape == (beit_table_size(dst), 2)
    old = t[:-3].reshape(13, 13, 2)
    grid = new[:-3].reshape(31, 31, 2)
    # offsets -1, 0, +1 on both axes sit on the same integer positions before and after
    torch.testing.assert_close(grid[14:17, 14:17], old[5:8, 5:8], rtol=0, atol=1e-5)
    torch.testing.assert_close(new[-3:], t[-3:], rtol=0, atol=0)
    assert not torch.allclose(grid[15, 17], old[6, 8])  # offset 2 is interpolated, not copied


def test_resampling_is_the_cubic_spline_on_the_geometric_offsets() -> None:
    src, dst = (7, 7), (12, 12)
    t = _table(src).double()
    offsets = _source_offsets(13, 23)
    assert offsets[6] == 0 and offsets[7] == 1 and abs(offsets[-1] - 11) < 1e-4  # reaches the target's edge
    ratios = np.diff(offsets[7:])
    np.testing.assert_allclose(ratios[1:] / ratios[:-1], ratios[1] / ratios[0])  # geometric spacing
    # A bicubic interpolating spline reproduces a product of cubics exactly: sample one on the
    # geometric source offsets and the resampled table must be the same cubics at integer offsets.
    def f(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return (0.5 + y - 0.02 * y**3) * (1.0 - 0.3 * x + 0.01 * x**2 + 0.001 * x**3)

    yy, xx = np.meshgrid(offsets, offsets, indexing="ij")
    t[:-3, 0] = torch.from_numpy(f(yy, xx).reshape(-1))
    new = resample_beit_table(t, src, dst)[:-3].reshape(23, 23, 2)
    ty, tx = np.meshgrid(np.arange(-11.0, 12.0), np.arange(-11.0, 12.0), indexing="ij")
    np.testing.assert_allclose(new[..., 0].numpy(), f(ty, tx), rtol=1e-9, atol=1e-9)


def _beit_state(vit: VisionTransformer, table: torch.Tensor) -> dict[str, torch.Tensor]:
    """A BEiT-style pretraining state dict: shared table, q/v biases, gamma_1/2."""
    state = {}
    for k, v in vit.state_dict().items():
        if k.endswith("attn.qkv.bias"):
            d = v.shape[0] // 3
            state[k.replace("qkv.bias", "q_bias")] = v[:d]
            state[k.replace("qkv.bias", "v_bias")] = v[2 * d :]
        elif k.endswith(("ls1.gamma", "ls2.gamma")):
            state[k.replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2")] = v
        elif k != "pos_embed":
            state[k] = v
    state["rel_pos_bias.relative_position_bias_table"] = table
    state["rel_pos_bias.relative_position_index"] = torch.zeros(5, 5, dtype=torch.long)
    return state


def test_beit_checkpoint_table_is_shared_resampled_and_used(tmp_path) -> None:
    kw = dict(embed_dim=64, depth=2, num_heads=2, init_values=0.1)
    src_vit = VisionTransformer(img_size=48, **kw)  # 3x3 grid
    table = _table((3, 3))
    path = tmp_path / "beit.pth"
    torch.save({"model": _beit_state(src_vit, table)}, path)

    model = VisionTransformer(img_size=64, rel_pos="beit", **kw).eval()  # 4x4 grid, cls kept
    report = load_encoder_weights(model, path)
    expected = resample_beit_table(table, (3, 3), (4, 4))
    for blk in model.blocks:
        torch.testing.assert_close(blk.attn.relative_position_bias_table.data, expected)
    assert not [k for k in report.missing if "relative_position" in k]
    assert any("geometric progression" in n for n in report.notes)
    # The bias reaches attention: zeroing the tables changes the features.
    x = torch.randn(1, 3, 64, 64)
    out = model.forward_intermediates(x, [1])[0]
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.relative_position_bias_table.zero_()
    assert not torch.allclose(out, model.forward_intermediates(x, [1])[0], atol=1e-4)

    plain = VisionTransformer(img_size=64, **kw)  # absolute positions only: the table is still dropped
    report = load_encoder_weights(plain, path)
    assert "rel_pos_bias.relative_position_bias_table" in report.dropped


def test_beit_bias_runtime_grid_change_keeps_cls_rows() -> None:
    t = _table((3, 3))
    bias = beit_rel_pos_bias(t, (3, 3), (4, 5), num_prefix=1)
    assert bias.shape == (1, 2, 21, 21)
    torch.testing.assert_close(bias[0, :, 0, 0], t[-1])
    torch.testing.assert_close(bias[0, :, 0, 3], t[-3])
