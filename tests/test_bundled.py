"""The models shipped inside the package: the registry, ``coda-hf models``, round trips, budgets, model cards."""

import configparser
import fnmatch
import importlib.util
import json
from pathlib import Path

import pytest
import torch

import coda_hf
from coda_hf.bundled import (
    BUNDLE_ROOT,
    UnknownBundledModelError,
    bundled_model,
    bundled_model_info,
    bundled_models,
)
from coda_hf.cli import main as cli_main
from coda_hf.models import DenseVAE

ROOT = Path(__file__).resolve().parents[1]
FASHION_MODELS = ("fashion-vae-2d", "fashion-beta-vae-0.25", "fashion-beta-vae-1", "fashion-beta-vae-4")
FASHION_TEST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist (.ci/run installs it)
FASHION_BUDGET = 3_000_000  # bytes of Fashion-MNIST weights
BUNDLE_BUDGET = 30_000_000  # bytes of everything bundled


def _load(path: str):
    """Any bundled directory with the loader its files name (as a user would pick it)."""
    from diffusers import AutoencoderKL

    from coda_hf import CodaMaskGitPipeline, CodaVQModel, MaskGitTransformer, VQGANModel

    if (Path(path) / "model_index.json").is_file():
        return CodaMaskGitPipeline.from_pretrained(path)
    config = json.loads((Path(path) / "config.json").read_text())
    if config.get("model_type") == "coda_maskgit":
        return MaskGitTransformer.from_pretrained(path)
    classes = {"DenseVAE": DenseVAE, "CodaVQModel": CodaVQModel, "VQGANModel": VQGANModel, "AutoencoderKL": AutoencoderKL}
    return classes[config["_class_name"]].from_pretrained(path)


def test_registry_lists_the_fashion_models_with_descriptions():
    models = bundled_models()
    assert set(FASHION_MODELS) <= set(models)
    assert all(desc and desc != "(no description)" for desc in models.values())
    assert coda_hf.bundled_model is bundled_model
    for name in models:
        # its own folder, or (bundle.json "directory") a folder inside another bundled model's
        assert Path(bundled_model(name)).is_dir() and BUNDLE_ROOT / "models" in Path(bundled_model(name)).parents


@pytest.mark.parametrize("name", ["no-such-model", "black-forest-labs/FLUX.1-dev", "", None])
def test_unknown_name_is_an_error_naming_the_valid_ones(name):
    with pytest.raises(UnknownBundledModelError) as e:
        bundled_model(name)
    assert isinstance(e.value, KeyError) and isinstance(e.value, ValueError)
    assert "is not a bundled model" in str(e.value) and all(n in str(e.value) for n in bundled_models())


def test_a_hub_id_is_never_shadowed():
    # from_pretrained is untouched: a bundled NAME passed as a Hub id goes to the Hub (offline here: an error),
    # it is not silently answered with the bundled copy.
    with pytest.raises(OSError):
        DenseVAE.from_pretrained("fashion-vae-2d")


@pytest.mark.parametrize("name", sorted(bundled_models()))
def test_every_bundled_model_round_trips(name, tmp_path):
    model = _load(bundled_model(name))
    model.save_pretrained(tmp_path)
    again = _load(str(tmp_path))
    modules = [(model, again)] if isinstance(model, torch.nn.Module) else [
        (getattr(model, c), getattr(again, c)) for c in ("tokenizer", "transformer")]  # fmt: skip
    for a, b in modules:
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _sizes(paths) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def test_bundle_budgets():
    fashion = [p for n in FASHION_MODELS for p in Path(bundled_model(n)).rglob("*.safetensors")]
    assert len(fashion) == len(FASHION_MODELS)
    assert _sizes(fashion) <= FASHION_BUDGET, f"Fashion-MNIST weights: {_sizes(fashion):,} bytes"
    assert _sizes(BUNDLE_ROOT.rglob("*")) <= BUNDLE_BUDGET, f"bundle: {_sizes(BUNDLE_ROOT.rglob('*')):,} bytes"


def test_package_data_ships_every_bundled_file():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["coda_hf"].replace(",", "\n").split() if p.strip()]
    package = ROOT / "src" / "coda_hf"
    files = [p.relative_to(package).as_posix() for p in (package / "bundled").rglob("*")
             if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]  # fmt: skip
    assert files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pat) and f.count("/") == pat.count("/") for pat in patterns)]
    assert not missing, f"bundled files that no package_data pattern ships: {missing}"


def test_models_command_lists_names_and_paths(capsys):
    assert cli_main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in bundled_models())
    assert cli_main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {n: v["path"] for n, v in listed.items()} == {n: bundled_model(n) for n in bundled_models()}


def _card_metrics(name: str) -> dict:
    card = ROOT / "model_cards" / bundled_model_info(name)["card"]
    return json.loads(card.read_text().split("```json\n")[1].split("```")[0])


@pytest.mark.parametrize("name", FASHION_MODELS)
def test_fashion_model_card_metrics_are_the_bundled_weights_measured(name):
    if not (FASHION_TEST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"no Fashion-MNIST test split at {FASHION_TEST_DIR} (apt-get install dataset-fashion-mnist)")
    from tools.data import read_idx  # the IDX parser is repository tooling (tools/data/fashion_mnist.py)

    spec = importlib.util.spec_from_file_location("train_dense_vae", ROOT / "examples" / "train_dense_vae.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    images = script.to_tensor(read_idx(FASHION_TEST_DIR / "t10k-images-idx3-ubyte.gz"))
    measured = script.evaluate(DenseVAE.from_pretrained(bundled_model(name)), images)
    card = _card_metrics(name)
    assert card.keys() == measured.keys() and card["images"] == measured["images"] == 10_000
    assert card["active_dims"] == measured["active_dims"]
    for key in ("elbo", "reconstruction_nll", "kl", "bits_per_dim", "psnr_mean_reconstruction"):
        assert measured[key] == pytest.approx(card[key], rel=1e-4), key
    assert measured["kl_per_dim"] == pytest.approx(card["kl_per_dim"], rel=1e-3, abs=1e-5)
    settings = json.loads((Path(bundled_model(name)) / "training_config.json").read_text())
    assert f"beta = {settings['beta']:g}" in (ROOT / "model_cards" / bundled_model_info(name)["card"]).read_text()
