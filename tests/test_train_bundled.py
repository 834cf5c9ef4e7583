"""benchmarks/train_bundled.py: the plan, and the whole 2-step smoke run (slow) into a temporary package folder."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def script(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its sibling modules
    spec = importlib.util.spec_from_file_location("train_bundled", BENCHMARKS / "train_bundled.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "train_bundled", module)
    spec.loader.exec_module(module)
    return module


def test_plan_stages_and_recipes(script, tmp_path):
    plan = {s.name: s for s in script.build_plan(tmp_path / "w", "cpu", tmp_path / "vae", tmp_path / "debs")}
    hw = script.CONFIGS["cpu"]
    rates = [script.rate_name(r) for r in hw["lora_rates"]]
    assert list(plan) == ["data", "vae", *rates, *[f"val-{r}" for r in rates], "select-lora", "vqgan", "prior-tiles",
                          "prior", "eval-vae", "eval-coda", "eval-vqgan", "eval-prior", "demo-photos", "bundle"]  # fmt: skip
    assert plan["data"].command[-2:] == ["--validation-fraction", str(hw["validation_fraction"])]
    for rate, run in zip(hw["lora_rates"], rates):  # one CODA run per LoRA rate, all else the reproduction's recipe
        cfg = plan[run].config
        assert cfg["learning_rate"] == rate and cfg["max_train_steps"] == hw["steps"] == 200
        assert cfg["model_kwargs"] == {"lora": {"encoder": {"rank": 0}, "decoder": {"rank": 8}}}
        assert cfg["quantizer"]["scales"] == [1, 2, 3, 4, 5, 6, 8, 10, 13, 16] and cfg["quantizer"]["quantizer"] == "attention"
        assert cfg["quantizer"]["quantizer_kwargs"]["codebook_size"] == 4096
        assert cfg["quantizer"]["quantizer_kwargs"]["init"] == "data"
        assert "--split" in plan[f"val-{run}"].command and "validation" in plan[f"val-{run}"].command
    vqgan = plan["vqgan"].config
    assert vqgan["max_train_steps"] == 6 * hw["steps"] and vqgan["quantizer"]["scales"] == hw["scales"]
    assert vqgan["quantizer"]["quantizer_kwargs"] == {"codebook_size": 4096, "restart_after": 20}
    assert vqgan["model_kwargs"]["embed_dim"] == 16
    assert plan["prior"].config["tokenizer"].endswith("runs/coda") and plan["prior"].config["label_column"] == "none"
    assert plan["prior"].config["hidden_size"] == 192 and plan["prior"].config["num_hidden_layers"] == 4
    for run in ("vae", "coda", "vqgan"):  # the eval split once per model
        assert plan[f"eval-{run}"].command[plan[f"eval-{run}"].command.index("--split") + 1] == "eval"
    assert script.run_plan(list(plan.values()), tmp_path / "w", dry_run=True) == list(plan)
    assert script.main(["--workdir", str(tmp_path / "w"), "--vae-workdir", str(tmp_path), "--dry-run"]) == 0
    with pytest.raises(SystemExit):
        script.main(["--workdir", str(tmp_path / "w"), "--vae-workdir", str(tmp_path), "--only", "nope"])


def _fake_vae_workdir(root: Path) -> Path:
    """What reproduce.py's stages data-vae, vae and vae-stats leave: a (random) tiny VAE with its files."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8)  # fmt: skip
    run = root / "runs" / "vae"
    vae.save_pretrained(run)
    config = {"model_kwargs": {"block_out_channels": [8, 16], "latent_channels": 4}, "max_train_steps": 2,
              "train_batch_size": 2, "learning_rate": 1e-3, "l1_weight": 1.0, "l2_weight": 1.0,
              "perceptual_weight": 0.0, "kl_beta": 1e-6}  # fmt: skip
    (run / "training_config.json").write_text(json.dumps(config))
    (run / "training_summary.json").write_text(json.dumps({"global_step": 2}))
    (run / "latent_stats.json").write_text(json.dumps({"shift_factor": 0.0, "scaling_factor": 1.0}))
    (root / "timings.json").write_text(json.dumps({"vae": 12.5}))
    return root


@pytest.mark.slow
def test_smoke_run_trains_evaluates_and_bundles_every_photo_model(script, tmp_path):
    from tools.data import prepare_photo_dataset

    photos = tmp_path / "photos"
    manifest = prepare_photo_dataset(photos, tmp_path / "cache", tile_sizes=(32,), levels=(1, 2), sources=("skimage",),
                                     train_shards=2, eval_shards=1, validation_fraction=0.2, validation_shards=1)  # fmt: skip
    vae_work = _fake_vae_workdir(tmp_path / "vae4x")
    (vae_work / "data" / "vae-photos").mkdir(parents=True)
    (vae_work / "data" / "vae-photos" / "manifest.json").write_text(json.dumps(manifest))
    work, bundle, cards = tmp_path / "work", tmp_path / "bundled", tmp_path / "cards"
    argv = ["--workdir", str(work), "--vae-workdir", str(vae_work), "--config", "smoke", "--photos", str(photos),
            "--bundle-dir", str(bundle), "--cards-dir", str(cards)]  # fmt: skip
    assert script.main(argv) == 0
    choice = json.loads((work / "lora_choice.json").read_text())
    assert set(choice["validation"]) == {"0.001", "0.01"} and choice["chosen"] in choice["validation"]
    names = ("photos-vae", "photos-coda", "photos-vqgan", "photos-prior")
    assert sorted(p.name for p in (bundle / "models").iterdir()) == sorted(names)
    info = json.loads((bundle / "models" / "photos-coda" / "bundle.json").read_text())
    assert info["directory"] == "../photos-prior/tokenizer" and set(info["demo_metrics"]) >= {"psnr", "fd_effnet"}
    tokenizer = json.loads((bundle / "models" / "photos-prior" / "tokenizer" / "config.json").read_text())
    assert tokenizer["latent_tile_size"] == 16 and tokenizer["decoder_lora_rank"] == 0  # tiled, LoRA merged
    assert (bundle / "photos" / "photos.json").is_file() and list((bundle / "photos").glob("*.png"))
    card = (cards / "photos-coda.md").read_text()
    assert "## Held-out metrics" in card and "chosen on the VALIDATION split" in card and "(chosen)" in card
    assert f"{info['demo_metrics']['psnr']:.2f}" in card
    timings = json.loads((work / "timings.json").read_text())
    assert all(timings[s] > 0 for s in ("coda-lr-0.001", "vqgan", "prior", "bundle"))
    assert json.loads((work / "invocations.json").read_text())[-1]["torch_threads"] >= 1
    assert script.run_plan(script.build_plan(work, "smoke", vae_work, tmp_path, photos, bundle, cards), work) == []
