"""benchmarks/generation.py: the generation experiment's plan, its 2-step smoke run end to end, the report."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def generation(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in ("generation", "generation_stages"):
        sys.modules.pop(name, None)
    return importlib.import_module("generation")


def fake_fashion(folder: Path, n: int = 20) -> None:
    """``n`` train and ``n`` test 32 px RGB images with labels ``i % 10`` (the prepare-fashion-mnist layout)."""
    import datasets
    from PIL import Image

    from coda_hf.data import write_parquet_shards

    rng = np.random.default_rng(0)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    for split in ("train", "test"):
        images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
        write_parquet_shards({"image": images, "label": [i % 10 for i in range(n)]}, features, folder, split, 1)


def test_plan_matches_bits_and_names_every_stage(generation, tmp_path):
    hw = generation.CONFIGS["fmnist-cpu"]
    assert generation.bits_per_image(hw, "coda") == generation.bits_per_image(hw, "msvqgan") == 85 * 12
    assert abs(generation.bits_per_image(hw, "vqgan") / (85 * 12) - 1) < 0.05  # 256 tokens x 4 bits
    stages = [s.name for s in generation.build_plan(tmp_path, "fmnist-cpu", tmp_path / "cache")]
    assert stages[:2] == ["data", "classifier"] and stages[-1] == "report"
    assert {"tok-coda", "eval-tok-vqgan", "fd-reference", "prior-msvqgan-s1", "gen-coda-s0"} <= set(stages)
    plan = {s.name: s for s in generation.build_plan(tmp_path, "fmnist-cpu", tmp_path / "cache", tmp_path / "tiles32")}
    assert "data" not in plan and plan["tok-coda"].config["train_data_dir"] == str(tmp_path / "tiles32")
    assert plan["prior-coda-s1"].config["seed"] == 1 and plan["prior-coda-s0"].config["label_column"] == "label"
    assert plan["tok-msvqgan"].config["max_train_steps"] == 6 * plan["tok-coda"].config["max_train_steps"]
    with pytest.raises(ValueError, match="unknown tokenizer"):
        generation.tokenizer_recipe(hw, "vae")
    cuda = {s.name: s for s in generation.build_plan(tmp_path, "fmnist-cuda", tmp_path / "cache", tmp_path / "tiles32")}
    assert cuda["tok-coda"].config["cpu"] is False and "--cpu" not in cuda["eval-tok-coda"].command
    same = {k: v for k, v in cuda["prior-coda-s0"].config.items() if k != "num_inference_steps"}  # validation only
    assert same == {k: v for k, v in plan["prior-coda-s0"].config.items() if k != "num_inference_steps"}
    import generation_stages

    assert generation_stages.device_of(hw).type == "cpu"  # "cpu": True whatever the machine has


@pytest.mark.slow
def test_smoke_run_writes_the_report(generation, tmp_path):
    fake_fashion(tmp_path / "tiles32")
    work = tmp_path / "work"
    assert generation.main(["--workdir", str(work), "--config", "smoke", "--data", str(tmp_path / "tiles32")]) == 0
    results = json.loads((work / "results.json").read_text())
    assert (work / "report-complete.json").is_file() and results["classifier"]["test_images"] == 20
    row = results["rows"]["coda"]
    assert row["seeds"] == [0, 1] and set(row["steps"]) == {"2", "4"} and row["reconstruction"]["psnr"] > 0
    assert set(row["steps"]["2"]) == {"fd_effnet", "class_accuracy", "seconds_per_image"} and row["devices"] == ["cpu"]
    assert len(row["steps"]["2"]["fd_effnet"]) == 2  # mean, std over the two prior seeds
    verdicts = {(c["b"], c["steps"], c["metric"]) for c in results["comparisons"]}
    assert ("msvqgan", "4", "class_accuracy") in verdicts and ("vqgan", "2", "fd_effnet") in verdicts
    assert (work / "generation" / "vqgan-s1" / "samples-4steps.png").is_file()
    assert "| A | B | steps |" in (work / "results.md").read_text()


def test_help_and_bad_data_folder(generation, tmp_path):
    with pytest.raises(SystemExit):
        generation.main(["--help"])
    with pytest.raises(SystemExit):
        generation.main(["--workdir", str(tmp_path), "--data", str(tmp_path)])  # not named tiles32
