"""Multi-scale adapters: strides, channels, padding, use as a torchvision FPN / Mask R-CNN backbone."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ssl_backbones.adapters import MaxPoolDeconvAdapter, SimpleFeaturePyramid, pad_to_multiple
from ssl_backbones.vit import create_vit

SIZES = [(64, 64), (96, 128), (100, 70)]  # square, non-square, not a multiple of 32


def encoder(depth: int = 4):
    return create_vit("vit_tiny", depth=depth, embed_dim=64, num_heads=2, img_size=64).eval()


def expected_hw(size, stride):
    return tuple(-(-s // 32) * 32 // stride for s in size)  # pad to 32, then downsample


@pytest.mark.parametrize("size", SIZES)
def test_maxpool_deconv_strides_and_channels(size):
    adapter = MaxPoolDeconvAdapter(encoder()).eval()
    out = adapter(torch.randn(2, 3, *size))
    assert list(out) == ["0", "1", "2", "3"]
    assert adapter.strides == [4, 8, 16, 32] and adapter.out_channels == 64
    for key, stride in zip(out, adapter.strides):
        assert out[key].shape == (2, 64, *expected_hw(size, stride))


@pytest.mark.parametrize("size", SIZES)
def test_simple_feature_pyramid_strides_and_channels(size):
    sfp = SimpleFeaturePyramid(encoder(), out_channels=32).eval()
    out = sfp(torch.randn(1, 3, *size))
    assert list(out) == ["0", "1", "2", "3", "pool"]
    for key, stride in zip(out, sfp.strides):
        h, w = expected_hw(size, 32)
        want = (-(-h // 2), -(-w // 2)) if key == "pool" else expected_hw(size, stride)
        assert out[key].shape == (1, 32, *want)


def test_maxpool_deconv_levels_come_from_the_tapped_blocks():
    enc = encoder(depth=4)
    adapter = MaxPoolDeconvAdapter(enc, out_indices=[0, 1, 2, 3]).eval()
    x = torch.randn(1, 3, 64, 64)
    out = adapter(x)
    maps = enc.forward_intermediates(x, [0, 1, 2, 3])
    torch.testing.assert_close(out["2"], maps[2])  # stride 16 is the identity
    torch.testing.assert_close(out["3"], torch.nn.functional.max_pool2d(maps[3], 2))
    torch.testing.assert_close(out["1"], adapter.fpn2(maps[1]))


def test_default_taps_and_unused_params_frozen():
    enc = create_vit("vit_tiny", depth=12, embed_dim=64, num_heads=2)
    adapter = MaxPoolDeconvAdapter(enc)
    assert adapter.out_indices == [3, 5, 7, 11]
    assert not any(p.requires_grad for p in enc.norm.parameters())
    partial = MaxPoolDeconvAdapter(create_vit("vit_tiny", depth=6, embed_dim=64, num_heads=2), out_indices=[0, 1, 2, 3])
    assert not any(p.requires_grad for p in partial.encoder.blocks[5].parameters())
    assert all(p.requires_grad for p in partial.encoder.blocks[3].parameters())


def test_every_trainable_parameter_gets_a_gradient():
    # What DDP needs with find_unused_parameters=False.
    for adapter in (MaxPoolDeconvAdapter(encoder()), SimpleFeaturePyramid(encoder(), out_channels=16)):
        adapter.train()
        sum(v.float().mean() for v in adapter(torch.randn(2, 3, 64, 96)).values()).backward()
        missing = [n for n, p in adapter.named_parameters() if p.requires_grad and p.grad is None]
        assert missing == []


def test_pad_to_multiple_pads_right_and_bottom_with_zeros():
    x = torch.ones(1, 1, 40, 70)
    y = pad_to_multiple(x)
    assert y.shape == (1, 1, 64, 96)
    assert y[..., :40, :70].eq(1).all() and y[..., 40:, :].eq(0).all() and y[..., :, 70:].eq(0).all()


def test_adapter_feeds_torchvision_fpn():
    adapter = MaxPoolDeconvAdapter(encoder()).eval()
    fpn = FeaturePyramidNetwork([adapter.out_channels] * 4, 256, extra_blocks=LastLevelMaxPool()).eval()
    out = fpn(adapter(torch.randn(1, 3, 96, 128)))
    assert list(out) == ["0", "1", "2", "3", "pool"]
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(24, 32), (12, 16), (6, 8), (3, 4), (2, 2)]
    assert all(v.shape[1] == 256 for v in out.values())
