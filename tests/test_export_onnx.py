"""ONNX export (``coda-hf export onnx``, :mod:`coda_hf.onnx_export`): ONNX Runtime against the PyTorch model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _helpers_coda import images, tiny_coda

from coda_hf import CodaVQModel
from coda_hf.cli import main
from coda_hf.onnx_export import export_onnx, split_token_ids, verify_onnx
from coda_hf.quantizers.multiscale import area_resize

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny CODA tokenizer saved, then exported by the command line (one export for the whole module)."""
    root = tmp_path_factory.mktemp("onnx")
    model = tiny_coda()
    model.save_pretrained(root / "model")
    assert main(["export", "onnx", "--model", str(root / "model"), "--output-dir", str(root / "onnx"),
                 "--verify-size", "32"]) == 0  # fmt: skip
    # the model as the command loaded it: a reloaded parameter sits at another memory alignment (safetensors offsets), which moves the
    # float32 rounding of the key projection by an ulp
    return CodaVQModel.from_pretrained(root / "model").eval(), root / "onnx"


@pytest.mark.slow
def test_cli_writes_both_graphs_config_and_a_passing_check(exported):
    model, out = exported
    config = json.loads((out / "onnx_config.json").read_text())
    assert config["scales"] == [1, 2, 4] and config["reference"] == 4 and config["downsample_factor"] == 2
    assert config["decoder"]["inputs"] == ["indices_0", "indices_1", "indices_2"] and config["codebook_size"] == 32
    check = json.loads((out / "onnx_check.json").read_text())
    assert check["token_agreement"] == 1.0 and check["max_abs_image_diff"] < 1e-4
    graph = onnx.load(str(out / "encoder.onnx"), load_external_data=False).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert [graph.input[0].name, graph.output[0].name] == ["pixel_values", "token_ids"]
    assert isinstance(dims[0], str) and isinstance(dims[2], str) and isinstance(dims[3], str)  # dynamic B, H, W


@pytest.mark.slow
@pytest.mark.parametrize("batch, height, width", [(1, 32, 32), (3, 34, 30), (2, 52, 52), (1, 4, 4)])
def test_onnx_runtime_equals_pytorch_at_other_batch_and_image_sizes(exported, batch, height, width):
    """Sizes the graphs were not traced at: odd latent sides make area windows of unequal sizes."""
    model, out = exported
    x = images(batch, 64, seed=batch)[:, :, :height, :width].contiguous()
    check = verify_onnx(model, out, x)
    assert check.token_agreement == 1.0
    assert check.max_abs_image_diff < 1e-4


@pytest.mark.slow
def test_numpy_only_round_trip_through_both_graphs(exported):
    model, out = exported
    config = json.loads((out / "onnx_config.json").read_text())
    x = images(2, 34, seed=5)[:, :, :34, :30].contiguous()
    encoder = ort.InferenceSession(str(out / "encoder.onnx"))
    decoder = ort.InferenceSession(str(out / "decoder.onnx"))
    ids = encoder.run(None, {"pixel_values": x.numpy()})[0]
    levels = split_token_ids(ids, (17, 15), config["scales"])
    recon = decoder.run(None, dict(zip(config["decoder"]["inputs"], levels)))[0]
    with torch.no_grad():
        expected = model.decode(model.encode(x).token_ids, latent_size=(17, 15))
    assert np.abs(recon - expected.numpy()).max() < 1e-4


@pytest.mark.slow
def test_encoder_graph_scores_against_the_eager_codebook_keys(exported):
    """The exported search holds PyTorch's codebook keys, bit for bit, as a constant: ONNX Runtime's own key
    projection and RMSNorm round identical codebook rows differently, which changed which of two identical
    codes won the argmax (with a data-initialised 65,536-code codebook, 5.7% of the token ids)."""
    from onnx import numpy_helper

    model, out = exported
    keys = model.quantizer.quantizers[0]._eval_keys().numpy()  # (K, hidden)
    constants = [numpy_helper.to_array(t) for t in onnx.load(str(out / "encoder.onnx")).graph.initializer]
    assert any(np.array_equal(c, keys) or np.array_equal(c, keys.T) for c in constants)
    assert model.quantizer.quantizers[0].__dict__.get("_constant_keys") is None  # only while exporting


def test_split_token_ids_follows_the_level_rule_and_names_bad_input():
    model = tiny_coda()
    with torch.no_grad():
        enc = model.encode(images(2, 34)[:, :, :34, :26])
    levels = split_token_ids(enc.token_ids.numpy(), (17, 13), [1, 2, 4])
    assert [lv.shape for lv in levels] == [tuple(i.shape) for i in enc.indices]
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(levels, enc.indices))
    assert [lv.shape for lv in split_token_ids(np.zeros((1, 12), np.int64), (2, 3), None, 2)] == [(1, 2, 3)] * 2
    with pytest.raises(ValueError, match="do not fit"):
        split_token_ids(enc.token_ids.numpy()[:, :-1], (17, 13), [1, 2, 4])


def tiled_coda():
    model = tiny_coda()
    model.register_to_config(latent_tile_size=4)  # f = 2: 8 px tiles (what train_bundled.py does)
    return model


def test_split_token_ids_of_a_tiled_tokenizer_gives_the_level_mosaics():
    model = tiled_coda()
    with torch.no_grad():
        enc = model.encode(images(2, 24)[:, :, :16, :].contiguous())  # latent (8, 12): 2 x 3 tiles
    levels = split_token_ids(enc.token_ids.numpy(), (8, 12), [1, 2, 4], 3, latent_tile_size=4)
    assert [lv.shape[1:] for lv in levels] == [(2, 3), (4, 6), (8, 12)]
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(levels, enc.indices))
    with pytest.raises(ValueError, match="does not split into 4 x 4 tiles"):
        split_token_ids(enc.token_ids.numpy(), (8, 10), [1, 2, 4], 3, latent_tile_size=4)


@pytest.mark.slow
def test_a_tiled_tokenizer_exports_with_dynamic_tile_counts(tmp_path):
    """``latent_tile_size``: image sides are multiples of the tile's pixels; the level inputs are mosaics."""
    tiled_coda().save_pretrained(tmp_path / "model")
    assert main(["export", "onnx", "--model", str(tmp_path / "model"), "--output-dir", str(tmp_path / "onnx"),
                 "--verify-size", "20"]) == 0  # 20 px -> 16 px: 2 x 2 tiles  # fmt: skip
    model = CodaVQModel.from_pretrained(tmp_path / "model").eval()
    config = json.loads((tmp_path / "onnx" / "onnx_config.json").read_text())
    assert config["latent_tile_size"] == 4
    x = images(3, 24, seed=3)[:, :, :8, :].contiguous()  # 1 x 3 tiles, a tile count the graphs were not traced at
    check = verify_onnx(model, tmp_path / "onnx", x)
    assert check.token_agreement == 1.0 and check.max_abs_image_diff < 1e-4
    encoder = ort.InferenceSession(str(tmp_path / "onnx" / "encoder.onnx"))
    decoder = ort.InferenceSession(str(tmp_path / "onnx" / "decoder.onnx"))
    ids = encoder.run(None, {"pixel_values": x.numpy()})[0]
    levels = split_token_ids(ids, (4, 12), config["scales"], config["num_levels"], config["latent_tile_size"])
    recon = decoder.run(None, dict(zip(config["decoder"]["inputs"], levels)))[0]
    with torch.no_grad():
        expected = model.decode(model.encode(x).indices)
    assert np.abs(recon - expected.numpy()).max() < 1e-4


def test_area_resize_equals_area_interpolation():
    x = torch.randn(2, 3, 26, 23)
    for size in [(7, 5), (13, 23), (1, 1), (3, 17), (26, 23)]:
        torch.testing.assert_close(area_resize(x, size), F.interpolate(x, size=size, mode="area"), rtol=1e-5, atol=1e-6)


def test_export_onnx_rejects_a_model_without_quantizer(tmp_path):
    with pytest.raises(ValueError, match="discrete tokenizer"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path)


@pytest.mark.slow
def test_onnx_benchmark_measure_smoke(exported, monkeypatch):
    """benchmarks/bench_onnx.py's measurement on the exported tiny model (2 timed rounds: warm-up + 1)."""
    import argparse
    import importlib.util
    from pathlib import Path

    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))
    spec = importlib.util.spec_from_file_location("bench_onnx", benchmarks / "bench_onnx.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model, out = exported
    args = argparse.Namespace(batch=2, threads=1, float64=True, repeats=1, clock="cpu")
    report = bench.measure(model, str(out), images(4, 32), args)
    assert report["images"] == 4 and report["token_agreement"] == 1.0 and report["max_abs_image_diff"] < 1e-4
    assert report["onnx_vs_float64"] < 1e-4 and report["torch_encode_s"] > 0 and report["onnx_decode_s"] > 0
    assert report["onnx_ids_vs_float64"] == report["torch_ids_vs_float64"] == 1.0
    text = bench.format_report({"config": {"resolution": 32, "codebook_size": 32, "unmerged": False, "threads": 1,
                                           "clock": "cpu", "repeats": 1, "batch": 2}, "export_s": 1.0, **report})
    assert "token ids equal: 100.000%" in text
    text = bench.format_report({"config": {"model": "photos-coda", "threads": 1, "clock": "cpu", "repeats": 1,
                                           "batch": 2}, "export_s": 1.0, **report})  # fmt: skip
    assert "model photos-coda" in text
    trained, photos = bench.trained_model_and_photos("photos-coda")  # --model: a bundled name
    assert trained.latent_tile_size == 16 and tuple(photos.shape) == (4, 3, 256, 256)
    with pytest.raises(SystemExit):
        bench.main(["--help"])


def test_missing_export_extra_names_it(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(ImportError, match=r"onnxscript.*coda_hf\[export\]"):
        export_onnx(tiny_coda(), tmp_path)


def test_tokenizer_model_card_explains_onnx_runtime(tmp_path):
    from coda_hf.hub import build_model_card

    tiny_coda().save_pretrained(tmp_path)
    text = build_model_card(tmp_path, "my-org/tok").text
    assert "coda-hf export onnx" in text and "split_token_ids" in text and "onnxruntime" in text


def test_cli_export_options_opset_and_no_verify(tmp_path, monkeypatch):
    """--opset reaches the exporter, --no-verify skips ONNX Runtime; a token mismatch gives exit code 1."""
    import coda_hf.onnx_export as onnx_export
    from coda_hf.onnx_export import OnnxCheck

    tiny_coda().save_pretrained(tmp_path / "model")
    calls = {}
    monkeypatch.setattr(onnx_export, "export_onnx", lambda model, out, opset_version=None: calls.update(opset=opset_version)
                        or onnx_export.OnnxExport("e", "d", "c"))  # fmt: skip
    monkeypatch.setattr(onnx_export, "verify_onnx", lambda *a, **k: calls.update(verified=True) or OnnxCheck(0.5, 0.0))
    args = ["export", "onnx", "--model", str(tmp_path / "model"), "--output-dir", str(tmp_path / "out")]
    assert main([*args, "--opset", "18", "--no-verify"]) == 0
    assert calls == {"opset": 18}
    (tmp_path / "out").mkdir()
    assert main(args) == 1 and calls["verified"]  # half the token ids differ: failure
    assert json.loads((tmp_path / "out" / "onnx_check.json").read_text())["token_agreement"] == 0.5
