"""`coda-hf evaluate` end to end on tiny models and a few generated PNGs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _helpers_metrics import tiny_autoencoder_kl, tiny_vqgan, write_images
from PIL import Image

from coda_hf.cli import main

DISCRETE_PLOTS = {"reconstructions.png", "code_usage.png", "quant_error.png", "latent_pca.png"}


def _check_outputs(out: Path, plots: set[str]) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    md = (out / "metrics.md").read_text().strip().splitlines()
    assert len(md) == 3 and md[2].startswith("| ")
    assert {p.name for p in out.glob("*.png")} == plots
    for name in plots:
        with Image.open(out / name) as im:
            im.verify()
    return metrics


@pytest.fixture
def images(tmp_path):
    write_images(tmp_path / "images", n=5)
    return tmp_path / "images"


def test_evaluate_continuous_autoencoder_kl(tmp_path, images, capsys):
    tiny_autoencoder_kl().save_pretrained(tmp_path / "vae")
    out = tmp_path / "out"
    rc = main(["evaluate", "--model", str(tmp_path / "vae"), "--data", str(images), "--resolution", "32",
               "--batch-size", "2", "--output-dir", str(out)])  # fmt: skip
    assert rc == 0
    assert "evaluate: " in capsys.readouterr().err  # the progress bar
    m = _check_outputs(out, {"reconstructions.png"})
    assert m["num_images"] == 5 and m["continuous"] is True and m["model_class"] == "AutoencoderKL"
    assert math.isfinite(m["psnr"]) and -1 <= m["ssim"] <= 1 and m["fd_effnet"] >= -1e-6
    assert "utilization" not in m and "rfid" not in m and m["resolution"] == 32
    assert "| vae | - | - | - |" in (out / "metrics.md").read_text()


def test_evaluate_discrete_vqgan(tmp_path, images):
    model = tiny_vqgan(codebook_size=16, num_levels=2)
    model.save_pretrained(tmp_path / "vq")
    out = tmp_path / "out"
    rc = main(["evaluate", "--model", str(tmp_path / "vq"), "--data", str(images), "--resolution", "32",
               "--batch-size", "3", "--num-images", "4", "--num-grid-images", "3", "--output-dir", str(out),
               "--cpu", "--no-progress"])  # fmt: skip
    assert rc == 0
    m = _check_outputs(out, DISCRETE_PLOTS)
    assert m["num_images"] == 4 and m["continuous"] is False and m["model_class"] == "VQGANModel"
    assert 0 < m["utilization"] <= 1 and m["codebook_size"] == 16 and 1 <= m["perplexity"] <= 16
    assert m["tokens_per_image"] == 2 * 16 * 16 and len(m["quant_error"]) == 2
    with Image.open(out / "reconstructions.png") as grid, Image.open(out / "code_usage.png") as usage:
        assert grid.width < usage.width * 2  # 3 columns, not 4

    # Same numbers through the library on the same preprocessed images.
    from coda_hf.metrics import evaluate_tokenizer
    from coda_hf.metrics.eval_data import image_batches, load_image_dataset

    # Same batch size as the command: float32 convs round differently at another batch size.
    batches = image_batches(load_image_dataset(data=str(images)), 32, batch_size=3, num_images=4)
    ref = evaluate_tokenizer(type(model).from_pretrained(tmp_path / "vq"), batches, feature_extractors={}, progress=False)
    for key in ("psnr", "ssim", "utilization", "perplexity", "quant_error"):
        assert m[key] == pytest.approx(ref[key], rel=1e-5), key


@pytest.mark.slow  # a 24M-parameter network at 299 px: a few seconds on an idle CPU
def test_evaluate_with_inception_weights_adds_rfid(tmp_path, images):
    from safetensors.torch import save_file

    from coda_hf.metrics import InceptionV3Features

    save_file(InceptionV3Features().state_dict(), str(tmp_path / "inception.safetensors"))
    tiny_autoencoder_kl().save_pretrained(tmp_path / "vae")
    out = tmp_path / "out"
    rc = main(["evaluate", "--model", str(tmp_path / "vae"), "--data", str(images), "--resolution", "32",
               "--num-images", "2", "--inception-weights", str(tmp_path / "inception.safetensors"),
               "--output-dir", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    m = _check_outputs(out, {"reconstructions.png"})
    assert m["num_images"] == 2 and math.isfinite(m["rfid"])


def test_evaluate_dataset_name_and_split(tmp_path, images):
    """``--dataset_name`` goes through ``datasets.load_dataset`` (here a local dataset repo of parquet shards)."""
    import datasets

    repo = tmp_path / "dataset_repo"
    (repo / "data").mkdir(parents=True)
    files = sorted(str(p) for p in images.rglob("*.png"))
    ds = datasets.Dataset.from_dict({"image": files}).cast_column("image", datasets.Image())
    ds.select(range(3)).to_parquet(str(repo / "data" / "validation-00000-of-00001.parquet"))
    ds.to_parquet(str(repo / "data" / "train-00000-of-00001.parquet"))
    tiny_autoencoder_kl().save_pretrained(tmp_path / "vae")
    out = tmp_path / "out"
    rc = main(["evaluate", "--model", str(tmp_path / "vae"), "--dataset_name", str(repo), "--split", "validation",
               "--resolution", "32", "--output-dir", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    m = _check_outputs(out, {"reconstructions.png"})
    assert m["num_images"] == 3 and m["split"] == "validation" and m["dataset"] == str(repo)


def test_evaluate_coda_vq_model(tmp_path, images):
    from coda_hf.models import CodaVQModel
    from coda_hf.models.presets import coda_quantizer

    model = CodaVQModel.from_vae(tiny_autoencoder_kl(), quantizer=coda_quantizer([1, 2, 4], codebook_size=32),
                                 lora={"rank": 2, "alpha": 2, "target_modules": ["conv1", "conv2"]})  # fmt: skip
    model.save_pretrained(tmp_path / "coda")
    out = tmp_path / "out"
    assert main(["evaluate", "--model", str(tmp_path / "coda"), "--data", str(images), "--resolution", "32",
                 "--output-dir", str(out), "--no-progress"]) == 0  # fmt: skip
    m = _check_outputs(out, DISCRETE_PLOTS)
    assert m["model_class"] == "CodaVQModel" and m["codebook_size"] == 32 and 0 < m["utilization"] <= 1
    assert m["tokens_per_image"] == model.num_tokens(32, 32) and len(m["quant_error"]) == 3
    assert f"| coda | {model.num_tokens(32, 32)} | 32 |" in (out / "metrics.md").read_text()


def test_evaluate_bad_inputs(tmp_path, images, capsys):
    out = ["--output-dir", str(tmp_path / "out")]

    def error(argv):  # every usage error: exit code 2 and one line naming the input
        capsys.readouterr()
        code = main(["evaluate", *argv, *out])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and err.startswith("coda-hf evaluate: error: "), err
        return err

    assert "nothing does not exist" in error(["--model", str(tmp_path / "nothing"), "--data", str(images)])
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    assert "'UNet2DModel' is not one of" in error(["--model", str(tmp_path / "odd"), "--data", str(images)])
    tiny_autoencoder_kl().save_pretrained(tmp_path / "vae")
    assert "missing does not exist" in error(["--model", str(tmp_path / "vae"), "--data", str(tmp_path / "missing")])
    assert "needs a split" in error(["--model", str(tmp_path / "vae"), "--dataset_name", "someone/imgs"])
    assert "--num-images must be >= 1" in error(["--model", str(tmp_path / "vae"), "--data", str(images),
                                                 "--num-images", "0"])  # fmt: skip
    assert not (tmp_path / "out").exists()  # nothing was created by the failed runs


def test_evaluate_skips_unreadable_and_uses_every_file_name(tmp_path, capsys):
    """A truncated image is skipped and counted; train_* / valid* file names are no split; results are
    kept unless --overwrite."""
    folder = tmp_path / "images"
    paths = write_images(folder, n=3)
    for path, name in zip(paths, ("train_a.png", "valid_b.png")):
        path.rename(path.with_name(name))
    (folder / "broken.png").write_bytes(paths[2].read_bytes()[:200])
    tiny_autoencoder_kl().save_pretrained(tmp_path / "vae")
    argv = ["evaluate", "--model", str(tmp_path / "vae"), "--data", str(folder), "--resolution", "32",
            "--output-dir", str(tmp_path / "out"), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["num_images"] == 3 and m["skipped_images"] == 1
    capsys.readouterr()
    assert main(argv) == 2 and "pass --overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert main([*argv[:-3], "--split", "valid", "--output-dir", str(tmp_path / "o2")]) == 2


@pytest.mark.slow
def test_evaluate_two_processes_reduce_like_one(tmp_path, images):
    """`accelerate launch` with 2 CPU processes (gloo) gives the metrics of a single process."""
    torch.manual_seed(0)
    tiny_vqgan(codebook_size=16, num_levels=2).save_pretrained(tmp_path / "vq")
    tests_dir = str(Path(__file__).resolve().parent)
    # The child processes must know the test quantizer: import the helper before the CLI runs.
    launcher = tmp_path / "launch_eval.py"
    launcher.write_text(
        f"import sys\nsys.path.insert(0, {tests_dir!r})\nimport _helpers_metrics  # noqa: F401\n"
        "from coda_hf.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    common = ["evaluate", "--model", str(tmp_path / "vq"), "--data", str(images), "--resolution", "32",
              "--batch-size", "2", "--cpu", "--no-progress"]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", str(launcher), *common, "--output-dir", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert main([*common, "--output-dir", str(tmp_path / "one")]) == 0
    m2 = _check_outputs(tmp_path / "two", DISCRETE_PLOTS)
    m1 = _check_outputs(tmp_path / "one", DISCRETE_PLOTS)
    assert m2["num_images"] == m1["num_images"] == 5
    for key in ("psnr", "ssim", "fd_effnet", "utilization", "perplexity", "quant_error", "tokens_per_image"):
        assert m2[key] == pytest.approx(m1[key], rel=1e-4, abs=1e-6), key


def test_split_named_shards_select_their_split(tmp_path):
    """``coda-hf data`` writes train-*/eval-* shards into one folder: --split picks its own files."""
    import datasets

    from coda_hf.data.shards import encode_png, write_parquet_shards
    from coda_hf.metrics.eval_data import load_image_dataset

    features = datasets.Features({"image": datasets.Image()})
    for split, n in (("train", 5), ("eval", 3)):
        tiles = [encode_png(Image.new("RGB", (8, 8), (i, 0, 0))) for i in range(n)]
        write_parquet_shards({"image": tiles}, features, tmp_path, split, num_shards=1)
    assert sum(1 for _ in load_image_dataset(data=str(tmp_path), split="eval")) == 3
    assert sum(1 for _ in load_image_dataset(data=str(tmp_path), split="train")) == 5
    assert sum(1 for _ in load_image_dataset(data=str(tmp_path / "eval-00000-of-00001.parquet"))) == 3
