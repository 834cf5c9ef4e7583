"""coda_hf.image_io: every input kind and mode becomes 8-bit RGB; bad files raise ImageLoadError naming them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from coda_hf.image_io import ImageLoadError, from_array, load_image, load_images, to_rgb


def _px(image):
    return np.asarray(image)


def test_rgb_passthrough_and_path(tmp_path):
    rgb = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    rgb.save(tmp_path / "a.png")
    for src in (rgb, tmp_path / "a.png", str(tmp_path / "a.png"), np.asarray(rgb)):
        out = load_image(src)
        assert out.mode == "RGB" and np.array_equal(_px(out), _px(rgb))


def test_grayscale_palette_and_modes():
    gray = Image.fromarray(np.full((3, 5), 77, np.uint8), "L")
    assert _px(load_image(gray)).tolist() == [[[77] * 3] * 5] * 3
    pal = Image.fromarray(np.full((2, 2, 3), (10, 200, 30), np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert _px(load_image(pal))[0, 0].tolist() == [10, 200, 30]
    cmyk = Image.new("CMYK", (2, 2), (0, 0, 0, 0))
    assert _px(load_image(cmyk))[0, 0].tolist() == [255, 255, 255]
    bw = Image.new("1", (2, 2), 1)
    assert _px(load_image(bw))[0, 0].tolist() == [255, 255, 255]


def test_alpha_composited_on_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (255, 0, 0, 0)  # transparent -> white
    rgba[1, 0] = (0, 0, 0, 128)  # half black -> grey
    out = _px(load_image(Image.fromarray(rgba, "RGBA")))
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 1].tolist() == [255, 255, 255]
    assert 120 <= out[1, 0, 0] <= 135
    la = Image.fromarray(np.zeros((2, 2, 2), np.uint8), "LA")
    assert _px(load_image(la))[0, 0].tolist() == [255, 255, 255]
    pal = Image.new("P", (2, 2), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    assert _px(load_image(pal))[0, 0].tolist() == [255, 255, 255]
    assert _px(from_array(rgba))[0, 1].tolist() == [255, 255, 255]  # 4-channel arrays too


def test_sixteen_bit(tmp_path):
    a16 = np.array([[0, 257 * 100], [65535, 32768]], np.uint16)
    out = _px(load_image(a16))
    assert out[..., 0].tolist() == [[0, 100], [255, 128]] and out.dtype == np.uint8
    Image.fromarray(a16).save(tmp_path / "g16.png")  # 16-bit grayscale PNG ("I;16" / "I")
    loaded = load_image(tmp_path / "g16.png")
    assert loaded.mode == "RGB" and _px(loaded)[..., 1].tolist() == [[0, 100], [255, 128]]
    assert _px(to_rgb(Image.fromarray(a16.astype(np.int32), "I")))[1, 0].tolist() == [255, 255, 255]


def test_array_layouts_and_dtypes():
    chw = np.zeros((3, 4, 5), np.uint8)
    chw[0] = 255
    assert load_image(chw).size == (5, 4) and _px(load_image(chw))[0, 0].tolist() == [255, 0, 0]
    assert _px(load_image(np.full((2, 2, 1), 9, np.uint8)))[0, 0].tolist() == [9, 9, 9]
    assert _px(load_image(np.ones((2, 2), bool)))[0, 0].tolist() == [255, 255, 255]
    assert _px(load_image(np.full((2, 2, 3), 0.5, np.float32)))[0, 0].tolist() == [128, 128, 128]
    with pytest.raises(ImageLoadError, match=r"\[0, 1\]"):
        load_image(np.full((2, 2, 3), 2.0))
    with pytest.raises(ImageLoadError, match="shape"):
        load_image(np.zeros((2, 2, 2, 2), np.uint8))
    with pytest.raises(ImageLoadError, match="dtype"):
        load_image(np.zeros((2, 2), np.int64))
    with pytest.raises(ImageLoadError, match="int"):
        load_image(3)


def test_bad_files_name_the_file(tmp_path):
    missing = tmp_path / "missing.png"
    with pytest.raises(ImageLoadError, match="missing.png"):
        load_image(missing)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ImageLoadError, match="junk.jpg"):
        load_image(junk)
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ImageLoadError, match="truncated.png"):
        load_image(truncated)
    assert issubclass(ImageLoadError, ValueError)


def test_load_images_list_and_single(tmp_path):
    im = Image.new("L", (3, 3))
    assert [x.mode for x in load_images([im, np.zeros((3, 3), np.uint8)])] == ["RGB", "RGB"]
    assert len(load_images(im)) == 1
