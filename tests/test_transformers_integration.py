"""The same saved CodaVQModel directory through transformers: AutoConfig, AutoModel, image processor, pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from _helpers_coda import images, tiny_coda
from PIL import Image

import coda_hf.transformers_integration as ti
from coda_hf.image_processing import CodaImageProcessor
from coda_hf.models import CodaVQModel


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("coda")
    model = tiny_coda()
    model.save_pretrained(path)
    return path, model


def _rand_image(h, w, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)


def test_auto_classes_read_the_diffusers_directory(saved):
    path, model = saved
    files = sorted(p.name for p in path.iterdir())
    assert files == ["config.json", "diffusion_pytorch_model.safetensors", "preprocessor_config.json"]  # one weights file
    config = transformers.AutoConfig.from_pretrained(path)
    assert isinstance(config, ti.CodaVQConfig) and config.model_type == "coda_vq"
    assert config.to_coda_kwargs()["quantizer"] == model.config.quantizer
    auto = transformers.AutoModel.from_pretrained(path)
    assert isinstance(auto, ti.CodaVQForTokenization) and not auto.training
    x = images(2)
    with torch.no_grad():
        out = auto(pixel_values=x)
        ref = model.encode(x)
    assert torch.equal(out.token_ids, ref.token_ids)
    assert all(torch.equal(a, b) for a, b in zip(out.indices, ref.indices))
    sd, sd2 = model.state_dict(), auto.coda.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)


def test_wrapper_save_pretrained_writes_the_diffusers_format(saved, tmp_path):
    path, model = saved
    auto = transformers.AutoModel.from_pretrained(path)
    auto.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["_class_name"] == "CodaVQModel"
    again = CodaVQModel.from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))


def test_image_processor_policy(saved):
    path, model = saved
    proc = transformers.AutoImageProcessor.from_pretrained(path)
    assert isinstance(proc, CodaImageProcessor)
    assert proc.size_divisor == model.downsample_factor == 2 and proc.size.shortest_edge == 32
    # 45x70 -> shorter side 32 -> 32x49 (aspect kept, truncated) -> center-crop to a multiple of 2: 32x48
    px = proc(_rand_image(45, 70), return_tensors="pt")["pixel_values"]
    assert px.shape == (1, 3, 32, 48) and px.min() >= -1 and px.max() <= 1
    odd = CodaImageProcessor(size={"shortest_edge": 33}, size_divisor=8)
    assert odd(_rand_image(33, 41), return_tensors="pt")["pixel_values"].shape == (1, 3, 32, 40)
    crop = CodaImageProcessor(size={"shortest_edge": 40}, do_center_crop=True, crop_size={"height": 32, "width": 32})
    assert crop(_rand_image(40, 60), return_tensors="pt")["pixel_values"].shape == (1, 3, 32, 32)
    # [-1, 1] scaling: a white image maps to 1, a black one to -1
    white = proc(Image.new("RGB", (32, 32), (255, 255, 255)), return_tensors="pt")["pixel_values"]
    black = proc(Image.new("RGB", (32, 32), (0, 0, 0)), return_tensors="pt")["pixel_values"]
    assert torch.allclose(white, torch.ones_like(white)) and torch.allclose(black, -torch.ones_like(black))
    # transparent RGBA is composited on white
    clear = proc(Image.new("RGBA", (32, 32), (0, 0, 0, 0)), return_tensors="pt")["pixel_values"]
    assert torch.allclose(clear, torch.ones_like(clear))
    with pytest.raises(ValueError, match="smaller than the size divisor"):
        CodaImageProcessor(do_resize=False, size_divisor=64)(_rand_image(32, 32), return_tensors="pt")
    with pytest.raises(ValueError, match="size_divisor"):
        CodaImageProcessor(size_divisor=0)


def test_pipeline_single_batched_paths_and_arrays(saved, tmp_path):
    path, model = saved
    pipe = transformers.pipeline(task="image-tokenization", model=str(path))
    assert isinstance(pipe, ti.CodaTokenizerPipeline)
    im = _rand_image(32, 32, seed=3)
    out = pipe(im)
    assert set(out) == {"token_ids", "indices", "level_shapes", "image_size"}
    assert out["token_ids"].shape == (336,) and out["level_shapes"] == [(4, 4), (8, 8), (16, 16)]
    assert out["image_size"] == (32, 32)
    # same tokens as the diffusers model on the processor's pixels
    px = CodaImageProcessor.from_pretrained(path)(im, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        assert torch.equal(out["token_ids"], model.encode(px).token_ids[0])
    assert torch.equal(torch.cat([i.flatten() for i in out["indices"]]), out["token_ids"])
    file = tmp_path / "a.png"
    im.save(file)
    batch = pipe([str(file), np.asarray(im), _rand_image(40, 48, seed=4)])
    assert len(batch) == 3
    assert torch.equal(batch[0]["token_ids"], out["token_ids"]) and torch.equal(batch[1]["token_ids"], out["token_ids"])
    assert batch[2]["image_size"] == (32, 38) and batch[2]["level_shapes"][-1] == (16, 19)


def test_pipeline_bad_file_names_it(saved, tmp_path):
    from coda_hf.image_io import ImageLoadError

    path, _ = saved
    pipe = transformers.pipeline(task="image-tokenization", model=str(path))
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageLoadError, match="corrupt.jpg"):
        pipe(str(bad))
