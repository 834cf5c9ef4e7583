"""The package's one image path (coda_hf.image_io): the same file gives bit-identical tensors through training,
evaluation, MaskGIT pre-tokenisation, the image processor, the tokenization pipeline and data.transforms; the
rules (EXIF orientation, alpha on white, 16-bit) and the policy (shorter side, then the centre) hold; a tile of
the exact training size passes untouched, as before; augmentation helpers of data.transforms."""

from __future__ import annotations

import struct
import types
import warnings
import zlib

import datasets
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import PILImageResampling, SizeDict

from coda_hf.data.shards import encode_png
from coda_hf.data.transforms import (
    center_crop_resize,
    collate_images,
    image_transform,
    random_resized_crop_and_flip,
)
from coda_hf.image_io import (
    load_image,
    load_pixel_values,
    pil_to_tensor,
    resize_center_crop,
    tensor_to_pil,
)
from coda_hf.image_processing import CodaImageProcessor
from coda_hf.metrics.eval_data import image_batches, load_image_dataset
from coda_hf.pipelines.tokenization import CodaTokenizerPipeline
from coda_hf.training.config import TrainingConfig
from coda_hf.training.data import ImageStream, build_transform
from coda_hf.training.maskgit_data import pretokenize_dataset

R = 16  # model resolution of the tests
ROTATE_90_CW = 6  # EXIF Orientation: the stored pixels must turn 90 degrees clockwise to be upright


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_rgba16(pixels: np.ndarray, orientation: int) -> bytes:
    """A 16-bit RGBA PNG (PIL cannot write one) with an ``eXIf`` chunk: ``pixels`` is ``(H, W, 4)`` uint16."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)  # 16 bits, colour type 6 (RGBA)
    exif = _exif(orientation)[len(b"Exif\x00\x00"):]  # the eXIf chunk holds the TIFF data alone
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        [_chunk(b"IHDR", header), _chunk(b"eXIf", exif), _chunk(b"IDAT", zlib.compress(rows)), _chunk(b"IEND", b"")]
    )


def _rgba16_file(folder) -> str:
    """37 x 23 (W x H) stored sideways: the left part opaque colour ramps, the right part fully transparent."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, (23, 37, 4), dtype=np.uint16)
    pixels[:, :25, 3] = 65535
    pixels[:, 25:, 3] = 0
    path = folder / "rgba16.png"
    path.write_bytes(_png_rgba16(pixels, ROTATE_90_CW))
    return str(path)


GRAY16 = np.linspace(0, 65535, 30 * 41).reshape(41, 30).astype(np.uint16)  # (H, W) stored


def _gray16_file(folder) -> str:
    """A 16-bit grayscale PNG (PIL mode I;16), 30 x 41, also stored sideways."""
    path = folder / "gray16.png"
    Image.fromarray(GRAY16).save(path, exif=_exif(ROTATE_90_CW))
    return str(path)


@pytest.fixture(params=["rgba16", "gray16"])
def odd_file(request, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    return (_rgba16_file if request.param == "rgba16" else _gray16_file)(folder)


class _RecordingTokenizer(torch.nn.Module):
    """Stands in for a tokenizer in pre-tokenisation: keeps the pixels it is given."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def encode(self, images):
        self.seen.append(images.clone())
        return types.SimpleNamespace(indices=[torch.zeros(images.shape[0], 1, 1, dtype=torch.long)])


def _through_every_path(path: str, tmp_path) -> dict[str, torch.Tensor]:
    """``(3, R, R)`` pixels of one file through each consumer of the image path."""
    config = TrainingConfig(model="vqgan", train_data_dir=str(tmp_path), resolution=R, crop_scale_min=1.0,
                            random_flip=False)  # fmt: skip
    stream = ImageStream([{"image": {"path": path, "bytes": None}}], "image", build_transform(config), batch_size=1,
                         seed=0, epoch=0, rank=0)  # fmt: skip
    folder = str(tmp_path / "images")
    evaluation = next(image_batches(load_image_dataset(data=folder), R, batch_size=1))
    recorder = _RecordingTokenizer()
    cells = datasets.Dataset.from_dict({"image": [path]}, features=datasets.Features({"image": datasets.Image()}))
    pretokenize_dataset(cells, recorder, tmp_path / "tokens", R, label_column=None, batch_size=1)
    processor = CodaImageProcessor(size={"shortest_edge": R}, do_center_crop=True, crop_size={"height": R, "width": R},
                                   size_divisor=1)  # fmt: skip
    pipeline = types.SimpleNamespace(image_processor=processor, dtype=None)
    with Image.open(path) as opened:  # a PIL image as a user opens it: EXIF orientation still to apply
        return {
            "training": next(iter(stream))["pixel_values"][0],
            "evaluation": evaluation[0],
            "pretokenisation": recorder.seen[0][0],
            "image processor (path)": processor(path, return_tensors="pt")["pixel_values"][0],
            "image processor (PIL)": processor(opened, return_tensors="pt")["pixel_values"][0],
            "tokenization pipeline": CodaTokenizerPipeline.preprocess(pipeline, path)["pixel_values"][0],
            "data.transforms": image_transform(R, train=False)(opened),
        }


def test_one_file_gives_bit_identical_tensors_through_every_path(odd_file, tmp_path):
    reference = load_pixel_values(odd_file, R)
    assert reference.shape == (3, R, R) and reference.dtype == torch.float32
    for where, pixels in _through_every_path(odd_file, tmp_path).items():
        assert pixels.dtype == torch.float32, where
        assert torch.equal(pixels, reference), f"{where} differs from coda_hf.image_io.load_pixel_values"
    # back to PIL: the 8-bit image the tensor came from, exactly
    expected = np.asarray(resize_center_crop(load_image(odd_file), R))
    assert np.array_equal(np.asarray(tensor_to_pil(reference)), expected)


def test_loading_rules_exif_alpha_sixteen_bit(tmp_path):
    rgba = load_image(_rgba16_file(tmp_path))
    assert rgba.mode == "RGB" and rgba.size == (23, 37)  # turned upright: 37 x 23 stored sideways
    pixels = np.asarray(rgba)
    assert (pixels[25:] == 255).all()  # the transparent part (right, now bottom) composited on white
    assert not (pixels[:25] == 255).all()
    gray = np.asarray(load_image(_gray16_file(tmp_path)))
    assert gray.shape == (30, 41, 3) and gray.min() == 0 and gray.max() == 255  # full 16-bit range -> 0..255
    # clockwise turn: the stored top row becomes the right column
    stored = np.round(GRAY16 / 257).astype(np.uint8)  # round(v / 257): the full 16-bit range onto 0..255
    assert np.array_equal(gray[..., 0], np.rot90(stored, k=-1))


def test_policy_is_shorter_side_then_centre_as_transformers():
    """Our resize / crop equals transformers' own shortest_edge resize and center crop (an independent
    implementation: torchvision's rounding of the long side, its crop offsets)."""
    rng = np.random.default_rng(1)
    processor = CodaImageProcessor()
    for height, width in ((30, 61), (61, 30), (17, 17), (40, 25)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        ours = np.asarray(resize_center_crop(image, R))
        array = np.moveaxis(np.asarray(image), -1, 0)
        theirs = PilBackend.resize(processor, array, SizeDict(shortest_edge=R), resample=PILImageResampling.BICUBIC)
        theirs = PilBackend.center_crop(processor, theirs, SizeDict(height=R, width=R))
        assert np.array_equal(ours, np.moveaxis(theirs, 0, -1)), (height, width)
    # a crop larger than the image keeps transformers' padding
    padded = processor.center_crop(np.ones((3, 4, 4), np.uint8), SizeDict(height=6, width=6))
    assert padded.shape == (3, 6, 6) and padded[:, 0].sum() == 0


def test_exact_size_tile_passes_untouched_as_before(tmp_path):
    """The reproduction's photo tiles are exactly the training resolution: the policy must not resample them,
    and every path gives what the previous transforms gave (computed here as they were written)."""
    tile = Image.fromarray(np.random.default_rng(2).integers(0, 256, (R, R, 3), dtype=np.uint8))
    cell = encode_png(tile)
    before = torch.from_numpy(np.asarray(tile, dtype=np.float32)).permute(2, 0, 1).div(127.5).sub(1.0)
    before_pretokenisation = torch.from_numpy(np.asarray(tile, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
    assert torch.equal(before, before_pretokenisation)
    assert torch.equal(load_pixel_values(cell, R), before)
    config = TrainingConfig(model="vqgan", train_data_dir=str(tmp_path), resolution=R, crop_scale_min=1.0,
                            random_flip=False)  # fmt: skip
    stream = ImageStream([{"image": cell}], "image", build_transform(config), batch_size=1, seed=0, epoch=0, rank=0)
    assert torch.equal(next(iter(stream))["pixel_values"][0], before)
    # the random crop of the training default at full scale and matching aspect is the whole tile
    whole = random_resized_crop_and_flip(load_image(cell), R, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0)
    assert torch.equal(whole, before)


def test_pil_tensor_conversions():
    image = Image.new("RGB", (5, 3), (255, 0, 128))
    t = pil_to_tensor(image)
    assert t.shape == (3, 3, 5) and t.dtype == torch.float32
    assert torch.allclose(t[:, 0, 0], torch.tensor([1.0, -1.0, 128 / 127.5 - 1]), atol=1e-6)
    assert np.array_equal(np.asarray(tensor_to_pil(t)), np.asarray(image))
    batch = tensor_to_pil(torch.stack([t, -t]))  # (B, 3, H, W) -> B images
    assert len(batch) == 2 and np.array_equal(np.asarray(batch[0]), np.asarray(image))
    assert pil_to_tensor(Image.new("L", (2, 2), 255)).shape == (3, 2, 2)
    with pytest.raises(TypeError, match="PIL"):
        pil_to_tensor(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="shape"):
        tensor_to_pil(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="positive int"):
        resize_center_crop(image, 0)
    from coda_hf.pipelines.maskgit import tensor_to_pil as pipeline_tensor_to_pil

    assert pipeline_tensor_to_pil is tensor_to_pil  # one way back to PIL


def test_centre_square_and_the_deprecated_name():
    array = np.zeros((40, 120, 3), dtype=np.uint8)
    array[:, 40:80] = (0, 255, 0)  # green centre square, black sides
    t = load_pixel_values(Image.fromarray(array), 16)
    assert t.shape == (3, 16, 16)
    # resized first (shorter side 40 -> 16), then cropped: the interior is the centre square; the edge columns
    # see the black neighbours through the bicubic filter, as with torchvision's Resize + CenterCrop
    assert torch.equal(t[1, :, 1:-1], torch.ones(16, 14)) and torch.equal(t[0, :, 1:-1], -torch.ones(16, 14))
    assert (t[1, :, [0, -1]] < 1).all() and (t[1, :, [0, -1]] > 0).all()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert torch.equal(center_crop_resize(Image.fromarray(array), 16), t)
    assert any(issubclass(w.category, FutureWarning) and "load_pixel_values" in str(w.message) for w in caught)


def test_random_resized_crop_and_flip_shapes_range_determinism():
    image = Image.fromarray(skimage.data.chelsea())
    out = random_resized_crop_and_flip(image, 32, generator=torch.Generator().manual_seed(3))
    assert out.shape == (3, 32, 32) and out.min() >= -1 and out.max() <= 1
    again = random_resized_crop_and_flip(image, 32, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    others = [random_resized_crop_and_flip(image, 32, generator=torch.Generator().manual_seed(s)) for s in range(4, 8)]
    assert any(not torch.equal(out, o) for o in others)
    # same generator state -> same crop box; flip_p=1 vs 0 gives exact mirror images
    flipped = random_resized_crop_and_flip(image, 32, flip_p=1.0, generator=torch.Generator().manual_seed(9))
    plain = random_resized_crop_and_flip(image, 32, flip_p=0.0, generator=torch.Generator().manual_seed(9))
    assert torch.equal(flipped, plain.flip(-1)) and not torch.equal(flipped, plain)
    for bad in (dict(scale=(0.0, 1.0)), dict(ratio=(2.0, 1.0)), dict(flip_p=1.5)):
        with pytest.raises(ValueError):
            random_resized_crop_and_flip(image, 32, **bad)


def test_image_transform_and_collate():
    rows = [{"image": Image.fromarray(skimage.data.coffee())}, {"image": Image.new("RGB", (50, 20))}]
    train = image_transform(16, train=True, generator=torch.Generator().manual_seed(0), scale=(0.8, 1.0))
    batch = collate_images(rows, train)
    assert batch.shape == (2, 3, 16, 16)
    evaluation = image_transform(16, train=False)
    assert torch.equal(collate_images(rows, evaluation)[0], load_pixel_values(rows[0]["image"], 16))
    with pytest.raises(ValueError, match="crop options"):
        image_transform(16, train=False, scale=(0.5, 1.0))
    with pytest.raises(KeyError, match="pixels"):
        collate_images(rows, evaluation, key="pixels")
