"""Smoke tests of the training / inference / deployment benchmarks (tiny sizes, two rounds each)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from _helpers_coda import tiny_coda

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def load(monkeypatch):
    """A script of ``benchmarks/`` as a module (its siblings importable)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def _load(name: str):
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with pytest.raises(SystemExit):  # every script answers --help
            module.main(["--help"])
        return module

    return _load


def test_attention_training_benchmark_smoke(load, tmp_path):
    bench = load("bench_attention_training")
    report = bench.main(["--codebook-size", "256", "--batch", "2", "--scales", "1", "2", "4", "--chunk-size", "8",
                         "--clock", "cpu", "--output", str(tmp_path / "r.json")])  # fmt: skip
    assert set(report["rows"]) == {"fused", "reference"} and report["tokens_per_image"] == 21
    assert all(r["peak_mib"] > 0 and r["train_s"] > 0 and r["forward_s"] > 0 for r in report["rows"].values())
    c = report["fused_vs_reference"]
    assert c["indices_identical"] and c["loss_rel_diff"] < 1e-5 and c["param_grad_rel_diff"] < 1e-4
    assert json.loads((tmp_path / "r.json").read_text())["rows"].keys() == report["rows"].keys()


def test_attention_scaling_benchmark_smoke(load, tmp_path):
    bench = load("bench_attention_scaling")
    report = bench.main(["--codebook-sizes", "128", "256", "--tokens", "16", "--token-counts", "8", "16", "--codes",
                         "128", "--repeats", "1", "--plot", str(tmp_path / "s.png")])  # fmt: skip
    assert [r["codes"] for r in report["sweeps"]["codes"]] == [128, 256]
    assert [r["tokens"] for r in report["sweeps"]["tokens"]] == [8, 16]
    assert set(report["r2"]) == {"codes", "tokens"} and (tmp_path / "s.png").stat().st_size > 1000
    assert bench.linear_fit([1, 2, 3], [2, 4, 6])[:2] == pytest.approx((2.0, 0.0), abs=1e-9)


def test_coda_model_benchmark_training_step_and_autocast_smoke(load):
    bench = load("bench_coda_model")
    model = tiny_coda()
    row = bench.time_batch(model, batch=1, resolution=32, repeats=1, clock="cpu", autocast="bf16")
    assert row["tokens"] == 336 and 0 < row["quantizer_share"] < 1 and row["encode_tokens_s"] > 0
    train = bench.time_train_step(model, batch=2, resolution=32, repeats=1)
    assert train["train_img_s"] > 0 and not model.training


@pytest.mark.slow
def test_half_precision_benchmark_smoke(load):
    bench = load("bench_half_precision")
    report = bench.main(["--codebook-size", "64", "--resolution", "32", "--init-crops", "1", "--eval-crops", "1"])
    assert report["images"] == 6 and set(report["rows"]) == {"bf16", "fp16"}
    for row in report["rows"].values():
        assert row["quantizer_search_float32"] == 0.0  # the search stays in float32 under autocast
    assert "encode" in report["rows"]["bf16"] and "encode" not in report["rows"]["fp16"]


def test_attention_screen_benchmark_smoke(load, tmp_path):
    bench = load("bench_attention_screen")
    report = bench.main(["--codebook-sizes", "128", "256", "--token-counts", "8", "--repeats", "1",
                         "--output", str(tmp_path / "s.json")])  # fmt: skip
    assert [(r["tokens"], r["codes"]) for r in report["rows"]] == [(8, 128), (8, 256)]
    assert all(r["screen_exact"] == 1.0 and r["screen_float32"] == 1.0 and r["float32_s"] > 0 and r["screen_s"] > 0 for r in report["rows"])
    assert json.loads((tmp_path / "s.json").read_text())["rows"] == report["rows"]
    data = bench.main(["--codebook-sizes", "256", "--token-counts", "8", "--repeats", "1", "--init", "data"])
    assert data["config"]["init"] == "data" and data["rows"][0]["screen_exact"] == 1.0
    keys = bench.make_quantizer(256, "data").keys().detach()
    assert torch.unique(keys, dim=0).shape[0] < 256  # sampled with replacement: duplicate codes
