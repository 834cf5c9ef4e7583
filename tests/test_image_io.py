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


def test_empty_images_raise():
    for empty in (np.zeros((0, 0, 3), np.uint8), np.zeros((4, 0), np.uint8), Image.new("RGB", (0, 3))):
        with pytest.raises(ImageLoadError, match="empty image"):
            load_image(empty)


def test_torch_tensor_layouts():
    import torch

    hwc = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    expected = _px(load_image(hwc))
    chw = torch.from_numpy(hwc).permute(2, 0, 1)
    for tensor in (chw, chw[None], torch.from_numpy(hwc), chw.float() / 255, (chw.float() / 255).half()):
        assert np.array_equal(_px(load_image(tensor)), expected)
    assert load_image(torch.zeros(3, 3, 4)).size == (4, 3)  # ambiguous (3, 3, 4): channel-first
    assert _px(load_image(torch.ones(4, 5, dtype=torch.bool)))[0, 0].tolist() == [255, 255, 255]
    with pytest.raises(ImageLoadError, match="batch"):
        load_image(torch.zeros(2, 3, 4, 4))
    assert len(load_images(torch.zeros(2, 3, 4, 4))) == 2
    with pytest.raises(ImageLoadError, match=r"\[0, 1\]"):
        load_image(torch.full((3, 2, 2), -0.5))


def test_bytes_and_dataset_cells(tmp_path):
    good = tmp_path / "g.png"
    Image.fromarray(np.full((3, 4, 3), 7, np.uint8)).save(good)
    data = good.read_bytes()
    for source in (data, {"bytes": data, "path": "x.png"}, {"bytes": None, "path": str(good)}):
        assert _px(load_image(source))[0, 0].tolist() == [7, 7, 7]
    with pytest.raises(ImageLoadError, match="cell.png"):
        load_image({"bytes": data[:40], "path": "cell.png"})


def test_urls_are_fetched_with_timeout(tmp_path):
    import functools
    import http.server
    import threading
    import time

    Image.fromarray(np.full((3, 4, 3), 200, np.uint8)).save(tmp_path / "cat.png")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/slow.png":
                time.sleep(1)
                self.path = "/cat.png"
            super().do_GET()

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):  # the client gave up on /slow.png: not an error here
            pass

    server = Server(("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert _px(load_image(f"{base}/cat.png"))[0, 0].tolist() == [200, 200, 200]
        with pytest.raises(ImageLoadError, match="dog.png.*404"):
            load_image(f"{base}/dog.png")
        with pytest.raises(ImageLoadError, match="slow.png"):
            load_image(f"{base}/slow.png", timeout=0.2)
        with pytest.raises(ImageLoadError, match="cannot fetch image http://127.0.0.1:9/x.png"):
            load_image("http://127.0.0.1:9/x.png")  # nothing listens on the discard port
    finally:
        server.shutdown()
        server.server_close()
