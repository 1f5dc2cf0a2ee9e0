"""engine.images: every mode becomes correct RGB uint8; broken files raise one error class."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from engine.images import UnreadableImageError, decode_rgb_tensor, read_rgb, read_size


def _save(tmp_path, im: Image.Image, name: str, **kw) -> str:
    path = tmp_path / name
    im.save(path, **kw)
    return str(path)


def test_rgb_and_gray_8bit(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    out = read_rgb(_save(tmp_path, Image.fromarray(rgb), "a.png"))
    assert out.dtype == np.uint8 and out.shape == (12, 10, 3)
    np.testing.assert_array_equal(out, rgb)
    gray = rgb[:, :, 0]
    out = read_rgb(_save(tmp_path, Image.fromarray(gray), "g.png"))
    np.testing.assert_array_equal(out, np.stack([gray] * 3, axis=2))


def test_16bit_gray_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 40000, 65535]], dtype=np.uint16)
    path = _save(tmp_path, Image.fromarray(values), "g16.png")
    assert Image.open(path).mode.startswith("I")  # really a 16-bit file
    out = read_rgb(path)
    expected = np.rint(values * 255.0 / 65535.0).astype(np.uint8)  # 0, 1, 156, 255
    np.testing.assert_array_equal(out[:, :, 0], expected)
    np.testing.assert_array_equal(out[:, :, 2], expected)
    assert out[0, 2, 0] == 156  # PIL's own convert("RGB") gives 255 here


def test_16bit_rgb_png_keeps_high_byte(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rgb16 = np.array([[[300, 40000, 65535], [1000, 0, 20000]]], dtype=np.uint16)
    path = str(tmp_path / "c16.png")
    cv2.imwrite(path, rgb16[:, :, ::-1])  # cv2 writes BGR
    out = read_rgb(path)
    assert np.abs(out.astype(int) - rgb16 * 255.0 / 65535.0).max() <= 1.0


def test_palette_with_transparency_la_rgba(tmp_path):
    pal = Image.new("P", (4, 3))
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
    pal.putpixel((1, 1), 1)
    path = _save(tmp_path, pal, "p.png", transparency=0)
    assert "transparency" in Image.open(path).info
    out = read_rgb(path)
    assert tuple(out[0, 0]) == (10, 20, 30) and tuple(out[1, 1]) == (200, 100, 50)
    la = Image.fromarray(np.array([[[70, 0], [90, 255]]], dtype=np.uint8), mode="LA")
    assert tuple(read_rgb(_save(tmp_path, la, "la.png"))[0, 1]) == (90, 90, 90)
    rgba = Image.fromarray(np.array([[[1, 2, 3, 0]]], dtype=np.uint8), mode="RGBA")
    assert tuple(read_rgb(_save(tmp_path, rgba, "rgba.png"))[0, 0]) == (1, 2, 3)


def test_cmyk(tmp_path):
    c, m, y, k = 100, 0, 50, 20
    cmyk = Image.new("CMYK", (2, 2), (c, m, y, k))
    out = read_rgb(_save(tmp_path, cmyk, "c.tif"))
    # the usual CMYK -> RGB: 255 * (1 - ink) * (1 - black)
    expected = [255 * (1 - v / 255) * (1 - k / 255) for v in (c, m, y)]
    assert np.abs(out[0, 0].astype(float) - expected).max() <= 0.5 + 1e-9


def _jpeg_bytes() -> bytes:
    arr = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_truncated_jpeg_and_png_raise(tmp_path):
    data = _jpeg_bytes()
    path = tmp_path / "t.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImageError) as info:
        read_rgb(path)
    assert info.value.path == str(path) and "truncated" in info.value.reason
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    png = tmp_path / "t.png"
    png.write_bytes(buf.getvalue()[:-200])
    with pytest.raises(UnreadableImageError):
        read_rgb(png)


def test_garbage_missing_and_flag(tmp_path, monkeypatch):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(np.random.default_rng(3).bytes(500))
    with pytest.raises(UnreadableImageError, match="junk.jpg"):
        read_rgb(junk)
    with pytest.raises(UnreadableImageError, match="nope.png"):
        read_rgb(tmp_path / "nope.png")
    with pytest.raises(UnreadableImageError):
        read_size(junk)
    good = tmp_path / "ok.jpg"
    good.write_bytes(_jpeg_bytes())
    assert read_size(good) == (64, 64)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        read_rgb(good)


def test_error_pickles():
    import pickle

    e = pickle.loads(pickle.dumps(UnreadableImageError("/x.jpg", "bad")))
    assert e.path == "/x.jpg" and e.reason == "bad" and "/x.jpg" in str(e)


def _photo_jpeg(path, mode: str, size=(97, 70)) -> str:
    """A noisy JPEG of `mode` (odd sizes: the partial last DCT block is where scaled decodes differ)."""
    arr = np.random.default_rng(4).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path, "JPEG", quality=90)
    return str(path)


def _pil_draft(path: str, factor: int) -> np.ndarray:
    with Image.open(path) as im:
        im.draft("RGB", (im.size[0] // factor, im.size[1] // factor))
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_tensor_decode_gives_pils_pixels_in_full_and_drafted(tmp_path, mode):
    # YCbCr and gray take libjpeg-turbo's own path (simplejpeg), CMYK PIL's: the pixels of both are
    # PIL's, in full and at each DCT factor, and the scale is the factor itself.
    path = _photo_jpeg(tmp_path / f"{mode}.jpg", mode)
    full, scale = decode_rgb_tensor(path)
    assert scale == 1.0 and full.dtype == torch.uint8
    np.testing.assert_array_equal(full.permute(1, 2, 0).numpy(), read_rgb(path))
    for factor in (2, 4, 8):
        calls = []

        def want(w: int, h: int, f: int = factor, seen: list = calls) -> tuple[int, int]:
            seen.append((w, h))
            return w // f, h // f

        drafted, scale = decode_rgb_tensor(path, want)
        assert calls == [(97, 70)] and scale == factor
        np.testing.assert_array_equal(drafted.permute(1, 2, 0).numpy(), _pil_draft(path, factor))


def test_tensor_decode_leaves_libjpeg_warnings_to_pil(tmp_path):
    # Junk bytes before a marker: libjpeg warns (the fast path refuses), PIL decodes the file; the
    # caller's `want` (which draws a crop box) still runs once.
    data = _jpeg_bytes()
    sos = data.index(b"\xff\xda")
    path = tmp_path / "junk_before_sos.jpg"
    path.write_bytes(data[:sos] + b"\x00\x01\x02" + data[sos:])
    calls = []
    image, scale = decode_rgb_tensor(path, lambda w, h: calls.append((w, h)) or None)
    assert calls == [(64, 64)] and scale == 1.0
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), read_rgb(path))
    truncated = tmp_path / "t.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImageError, match="t.jpg"):
        decode_rgb_tensor(truncated)
    with pytest.raises(UnreadableImageError, match="missing.jpg"):
        decode_rgb_tensor(tmp_path / "missing.jpg")
