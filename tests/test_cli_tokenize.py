"""``coda-hf tokenize`` and ``coda-hf reconstruct`` through ``coda_hf.cli.main``."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from _helpers_coda import tiny_coda
from PIL import Image
from safetensors import safe_open

from coda_hf.cli import main
from coda_hf.image_io import load_image
from coda_hf.image_processing import CodaImageProcessor


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("coda_cli")
    tiny_coda().save_pretrained(path)
    return path


def _write_images(folder, n=3):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (32 + 4 * i, 40, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_tokenize_writes_tokens_and_level_metadata(model_dir, tmp_path):
    from coda_hf.models import CodaVQModel

    paths = _write_images(tmp_path)
    out = tmp_path / "tokens.safetensors"
    assert main(["tokenize", *map(str, paths), "--model", str(model_dir), "--output", str(out)]) == 0
    model = CodaVQModel.from_pretrained(model_dir).eval()
    proc = CodaImageProcessor.from_pretrained(model_dir)
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        records = json.loads(meta["images"])
        assert [r["path"] for r in records] == list(map(str, paths))
        assert meta["codebook_size"] == "32"
        for r in records:
            ids = f.get_tensor(r["key"])
            px = proc(load_image(r["path"]), return_tensors="pt")["pixel_values"]
            assert r["image_size"] == list(px.shape[-2:])
            assert r["level_shapes"] == [list(s) for s in model.level_shapes(*px.shape[-2:])]
            with torch.no_grad():
                assert torch.equal(ids, model.encode(px).token_ids[0])
            assert ids.shape == (sum(h * w for h, w in r["level_shapes"]),)


def test_tokenize_bad_file_named_others_finish(model_dir, tmp_path, caplog):
    paths = _write_images(tmp_path, 2)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG garbage")
    out = tmp_path / "t.safetensors"
    with caplog.at_level(logging.ERROR):
        code = main(["tokenize", str(paths[0]), str(bad), str(paths[1]), "--model", str(model_dir),
                     "--output", str(out), "--no-progress"])  # fmt: skip
    assert code == 1
    assert "broken.png" in caplog.text
    with safe_open(str(out), "pt") as f:
        assert sorted(f.keys()) == ["tokens_0", "tokens_2"]


def test_tokenize_resolution_option(model_dir, tmp_path, capsys):
    paths = _write_images(tmp_path, 1)
    out = tmp_path / "r.safetensors"
    assert main(["tokenize", str(paths[0]), "--model", str(model_dir), "--output", str(out), "--resolution", "16"]) == 0
    with safe_open(str(out), "pt") as f:
        assert json.loads(f.metadata()["images"])[0]["image_size"] == [16, 20]
    for bad in ("1", "0"):
        capsys.readouterr()
        code = main(["tokenize", str(paths[0]), "--model", str(model_dir), "--output", str(tmp_path / "s.safetensors"),
                     "--resolution", bad])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and f"--resolution {bad}" in err and "Traceback" not in err


def test_tokenize_progress_bar_for_many_files(model_dir, tmp_path, capsys):
    paths = _write_images(tmp_path, 3)
    assert main(["tokenize", *map(str, paths), "--model", str(model_dir), "--output", str(tmp_path / "p.safetensors")]) == 0
    assert "3/3" in capsys.readouterr().err


def test_reconstruct_writes_pngs(model_dir, tmp_path, caplog):
    paths = _write_images(tmp_path, 2)
    out_dir = tmp_path / "rec"
    missing = tmp_path / "nope.png"
    with caplog.at_level(logging.ERROR):
        code = main(["reconstruct", *map(str, paths), str(missing), "--model", str(model_dir), "--output-dir", str(out_dir)])
    assert code == 1 and "nope.png" in caplog.text
    written = sorted(p.name for p in out_dir.iterdir())
    assert written == ["img0.png", "img1.png"]
    rec = Image.open(out_dir / "img1.png")
    px = CodaImageProcessor.from_pretrained(model_dir)(load_image(paths[1]), return_tensors="pt")["pixel_values"]
    assert rec.mode == "RGB" and rec.size == (px.shape[-1], px.shape[-2]) == (34, 32)  # 36x40 -> 32x35 -> 32x34
