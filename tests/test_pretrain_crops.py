"""Crops decoded at reduced size (pretrain.crops): same box, same distribution, close pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from engine.images import decode_rgb
from pretrain.crops import DraftCropTransform, draft_want, resized_crop
from pretrain.data import IMAGENET_MEAN, IMAGENET_STD, normalize_images


def _photo(path: Path, w: int = 640, h: int = 480) -> Path:
    """A smooth photo-like JPEG (gradients and blobs, little noise) where DCT scaling is near lossless."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([128 + 90 * np.sin(x / (37 + 9 * c) + c) * np.cos(y / (53 - 7 * c)) for c in range(3)], -1)
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=92)
    return path


def test_draft_want_keeps_the_box_at_least_the_target_size() -> None:
    # PIL's draft picks s = largest of 8, 4, 2, 1 with s <= min(W // w, H // h).
    for box, expected_s in [((0, 0, 480, 480), 2), ((0, 0, 447, 600), 1), ((10, 20, 200, 300), 1)]:
        w, h = draft_want(box, 224, 640, 480)
        s = max([f for f in (8, 4, 2) if f <= min(640 // w, 480 // h)], default=1)
        assert s == expected_s
        assert box[2] / s >= 224 and box[3] / s >= 224 or s == 1
    assert draft_want((0, 0, 1600, 2000), 224, 2000, 1600) == (224, 224)  # the whole image: 1/8 allowed


def test_draft_decoded_crop_covers_the_same_box_and_is_close_to_the_full_decode(tmp_path: Path) -> None:
    path = _photo(tmp_path / "p.jpg", 1333, 800)
    box = (40, 100, 760, 900)  # (top, left, h, w) in stored pixels
    fast, box_fast, s_fast = resized_crop(path, lambda w, h: box, 224, draft=True)
    full, box_full, s_full = resized_crop(path, lambda w, h: box, 224, draft=False)
    assert box_fast == box_full == box and s_full == 1 and s_fast == 2  # 760 / 2 >= 224 > 760 / 4
    # The independent oracle: PIL's full decode, crop of the same box, bicubic resize.
    oracle = Image.open(path).convert("RGB").crop((100, 40, 1000, 800)).resize((224, 224), Image.BICUBIC)
    oracle = torch.from_numpy(np.asarray(oracle).copy()).permute(2, 0, 1).float()
    assert (full.float() - oracle).abs().max() <= 2  # torch's uint8 bicubic = PIL's to a grey level or two
    assert (fast.float() - oracle).abs().mean() < 1.5 and (fast.float() - oracle).abs().max() < 24
    # A box misplaced by 8 stored pixels is visibly further from the oracle than the draft decode.
    moved, _, _ = resized_crop(path, lambda w, h: (48, 108, 760, 900), 224, draft=False)
    assert (moved.float() - oracle).abs().mean() > 2 * (fast.float() - oracle).abs().mean()


def test_decode_scale_maps_stored_pixels(tmp_path: Path) -> None:
    path = _photo(tmp_path / "p.jpg", 640, 480)
    half, scale = decode_rgb(path, lambda w, h: (320, 240))
    assert scale == 2 and half.size == (320, 240)
    quarter, scale = decode_rgb(io.BytesIO(path.read_bytes()), lambda w, h: (100, 100), name="m")
    assert scale == 4 and quarter.size == (160, 120)
    png = tmp_path / "p.png"
    Image.open(path).save(png)
    assert decode_rgb(png, lambda w, h: (100, 100))[1] == 1  # only JPEGs have DCT scaling


def test_boxes_follow_torchvision_random_resized_crop(tmp_path: Path) -> None:
    path = _photo(tmp_path / "p.jpg", 640, 480)
    t = DraftCropTransform(224, (0.2, 1.0))
    reference = RandomResizedCrop(224, scale=(0.2, 1.0))
    for seed in range(20):
        torch.manual_seed(seed)
        _, box, _ = resized_crop(path, t.draw_box, 224)
        torch.manual_seed(seed)
        assert box == tuple(reference.get_params(Image.open(path), reference.scale, reference.ratio))


def test_transform_is_seeded_flips_and_ships_uint8(tmp_path: Path) -> None:
    path = _photo(tmp_path / "p.jpg", 640, 480)
    t = DraftCropTransform(64, (1.0, 1.0))
    outs = []
    for seed in range(6):
        torch.manual_seed(seed)
        outs.append(t(path))
    torch.manual_seed(0)
    assert torch.equal(t(path), outs[0]) and outs[0].dtype == torch.uint8 and outs[0].shape == (3, 64, 64)
    # Full-area crops differ only by the box's aspect and the flip: some of them are mirror images.
    unflipped = TF.resize(TF.pil_to_tensor(Image.open(path).convert("RGB")), [64, 64],
                          interpolation=InterpolationMode.BICUBIC, antialias=True).float()  # fmt: skip
    errors = [((o.float() - unflipped).abs().mean(), (o.flip(-1).float() - unflipped).abs().mean()) for o in outs]
    assert any(a < b for a, b in errors) and any(b < a for a, b in errors)


def test_normalize_images_matches_torchvision_normalize() -> None:
    x = torch.randint(0, 256, (2, 2, 3, 8, 8), dtype=torch.uint8)
    out = normalize_images({"global_crops": x, "ids": torch.ones(2)})
    expected = TF.normalize(x.float().flatten(0, 1) / 255, IMAGENET_MEAN, IMAGENET_STD).view(2, 2, 3, 8, 8)
    torch.testing.assert_close(out["global_crops"], expected)
    assert torch.equal(out["ids"], torch.ones(2))


@pytest.mark.parametrize("draft", [True, False])
def test_broken_jpeg_is_unreadable_with_or_without_draft(tmp_path: Path, draft: bool) -> None:
    from engine.images import UnreadableImageError

    path = _photo(tmp_path / "p.jpg", 640, 480)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UnreadableImageError, match="cut.jpg"):
        DraftCropTransform(64, (0.9, 1.0), draft=draft)(cut)
