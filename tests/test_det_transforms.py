"""Boxes and masks stay aligned with the image under every training policy (flip, resize, crop, pad)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision import tv_tensors

from transfer.detection.config import DataConfig
from transfer.detection.transforms import FixedSizeCrop, RandomSizeCrop, build_train_transforms

COLOURS = torch.tensor([[230, 20, 20], [20, 230, 20], [20, 20, 230]], dtype=torch.uint8)
BACKGROUND = 128

# Small versions of the three policies (the images are ~100-140 px).
POLICIES = {
    "multiscale_crop": DataConfig(policy="multiscale_crop", train_sizes=(96, 128, 160), max_size=256,
                                  crop_pre_sizes=(80, 100, 120), crop_size=(60, 100)),
    "lsj": DataConfig(policy="lsj", lsj_size=128, lsj_scale=(0.5, 2.0)),
    "fixed": DataConfig(policy="fixed", train_sizes=(150,), max_size=300),
}


def _sample(seed: int) -> tuple[tv_tensors.Image, dict]:
    """A grey image with up to three non-overlapping rectangles of distinct colours, and their targets."""
    g = torch.Generator().manual_seed(seed)
    h, w = (int(v) for v in torch.randint(96, 144, (2,), generator=g))
    image = torch.full((3, h, w), BACKGROUND, dtype=torch.uint8)
    masks, boxes = [], []
    for k in range(3):
        # Each rectangle in its own horizontal band so they never overlap.
        band = w // 3
        x0 = k * band + int(torch.randint(0, band // 3, (), generator=g))
        x1 = x0 + int(torch.randint(band // 2, band - band // 3, (), generator=g))
        y0 = int(torch.randint(0, h // 2, (), generator=g))
        y1 = y0 + int(torch.randint(h // 4, h // 2, (), generator=g))
        image[:, y0:y1, x0:x1] = COLOURS[k].view(3, 1, 1)
        m = torch.zeros(h, w, dtype=torch.uint8)
        m[y0:y1, x0:x1] = 1
        masks.append(m)
        boxes.append([x0, y0, x1, y1])
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32), format="XYXY", canvas_size=(h, w)),
        "masks": tv_tensors.Mask(torch.stack(masks)),
        "labels": torch.arange(1, 4),
    }
    return tv_tensors.Image(image), target


def _tight_box(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


def _dilate(mask: torch.Tensor, r: int) -> torch.Tensor:
    return F.max_pool2d(mask[None, None].float(), 2 * r + 1, stride=1, padding=r)[0, 0].bool()


def _erode(mask: torch.Tensor, r: int) -> torch.Tensor:
    # Outside the canvas counts as "not mask": a crop edge through a blurred border is eroded too.
    outside = F.pad((~mask.bool()).float()[None, None], (r, r, r, r), value=1.0)
    return ~F.max_pool2d(outside, 2 * r + 1, stride=1)[0, 0].bool()


def _check_aligned(image: torch.Tensor, target: dict, scale: float) -> int:
    """Assert every instance's mask sits on its colour and its box is the mask's tight box."""
    H, W = image.shape[-2:]
    masks, boxes, labels = target["masks"], target["boxes"], target["labels"]
    assert masks.shape[-2:] == (H, W) and boxes.canvas_size == (H, W)
    assert len(masks) == len(boxes) == len(labels)
    checked = 0
    for m, box, label in zip(masks, boxes, labels):
        colour = COLOURS[int(label) - 1].view(3, 1).float()
        if m.sum() == 0:
            continue
        # Interior pixels (r px away from the mask border) have the rectangle's colour; the border
        # is blurred by bilinear / antialiased resizing of the image (masks are resized nearest).
        r = math.ceil(scale) + 1
        inner = _erode(m, r)
        if inner.sum() > 0:
            pixels = image[:, inner].float()
            assert (pixels - colour).abs().max() <= 12, f"label {int(label)}: mask is not on its colour"
        # Outside the mask (r px margin) the colour of this rectangle does not appear.
        outer = ~_dilate(m, r)
        far = image[:, outer].float()
        assert ((far - colour).abs().max(dim=0).values <= 12).sum() == 0
        # Box = tight box of the mask, up to the rounding of nearest-neighbour mask resizing.
        tol = 1.0 + scale
        assert torch.allclose(box, _tight_box(m), atol=tol), (box, _tight_box(m))
        checked += 1
    return checked


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_boxes_and_masks_follow_the_image(policy: str) -> None:
    transform = build_train_transforms(POLICIES[policy])
    instances = 0
    for seed in range(12):
        image, target = _sample(seed)
        torch.manual_seed(1000 + seed)
        out_img, out_t = transform(image, target)
        # Upper bound of the resize factor of this policy (tolerance of nearest mask resizing).
        scale = {"multiscale_crop": 160 / 60, "lsj": 2.0 * 128 / 96, "fixed": 150 / 96}[policy]
        instances += _check_aligned(out_img, out_t, scale)
        if policy == "lsj":
            assert tuple(out_img.shape[-2:]) == (128, 128)  # fixed-size crop, padded
    assert instances >= 12  # the checks did run on real instances


def test_flip_is_exact() -> None:
    from torchvision.transforms import v2

    image, target = _sample(3)
    out_img, out_t = v2.RandomHorizontalFlip(p=1.0)(image, target)
    W = image.shape[-1]
    assert torch.equal(out_img, image.flip(-1))
    assert torch.equal(out_t["masks"], target["masks"].flip(-1))
    expected = target["boxes"].clone()
    expected[:, 0], expected[:, 2] = W - target["boxes"][:, 2], W - target["boxes"][:, 0]
    assert torch.equal(out_t["boxes"], expected)
    for m, box in zip(out_t["masks"], out_t["boxes"]):
        assert torch.equal(box, _tight_box(m))


def test_crop_drops_instances_cut_away() -> None:
    image, target = _sample(0)
    # A 40 px crop cannot reach all three rectangles (one per third of a >= 96 px wide image):
    # those it misses go, with their labels and masks; the rest stay aligned.
    from torchvision.transforms import v2

    pipeline = v2.Compose([RandomSizeCrop(40, 40), v2.SanitizeBoundingBoxes(min_size=1.0)])
    for seed in range(10):
        torch.manual_seed(seed)
        out_img, out_t = pipeline(image, target)
        assert tuple(out_img.shape[-2:]) == (40, 40)
        assert len(out_t["labels"]) < 3
        present = {int(lbl) for lbl in out_t["labels"]}
        visible = {k + 1 for k in range(3) if (out_img == COLOURS[k].view(3, 1, 1)).all(0).any()}
        assert present == visible
        _check_aligned(out_img, out_t, scale=0.0)


def test_random_size_crop_bounds_and_fixed_size_pad() -> None:
    image, target = _sample(5)
    H, W = image.shape[-2:]
    crop = RandomSizeCrop(50, 80)
    for seed in range(20):
        torch.manual_seed(seed)
        out, _ = crop(image, target)
        assert 50 <= out.shape[-2] <= min(80, H) and 50 <= out.shape[-1] <= min(80, W)
    pad = FixedSizeCrop(200)
    out_img, out_t = pad(image, target)
    assert tuple(out_img.shape[-2:]) == (200, 200) and out_t["masks"].shape[-2:] == (200, 200)
    # Padding is at the right / bottom: the original pixels stay where they were.
    assert torch.equal(out_img[:, :H, :W], image)
    assert torch.equal(out_t["boxes"], target["boxes"])
    assert (out_img[:, H:, :] == torch.tensor([124, 116, 104], dtype=torch.uint8).view(3, 1, 1)).all()
    assert out_t["masks"][:, H:, :].sum() == 0
