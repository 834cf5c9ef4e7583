"""The one settings mechanism of the training scripts (coda_hf.settings): layering, merging, nested keys,
suggestions for unknown options, --help with defaults, one default per setting."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from _helpers_training import script_env

from coda_hf.settings import Settings, deep_merge, option
from coda_hf.training import TrainingConfig
from coda_hf.training.maskgit_trainer import MaskGitTrainingConfig

ROOT = Path(__file__).resolve().parents[1]
MULTISCALE = {"name": "multiscale", "scales": [1, 2, 4], "quantizer": "attention",
              "quantizer_kwargs": {"codebook_size": 64, "hidden_dim": 8}}  # fmt: skip


@dataclass
class Toy(Settings):
    """A toy settings class."""

    steps: list[int] = option(help="update numbers", default_factory=list)
    rate: float = option(0.5, "a rate")
    name: str | None = option(None, "a name")
    nested: dict = option(help="a mapping", default_factory=dict)


def test_deep_merge_keeps_what_an_override_leaves_out_and_a_new_name_replaces():
    assert deep_merge(MULTISCALE, {"quantizer_kwargs": {"codebook_size": 8}}) == {
        **MULTISCALE, "quantizer_kwargs": {"codebook_size": 8, "hidden_dim": 8}}  # fmt: skip
    assert deep_merge(MULTISCALE, {"name": "vq", "codebook_size": 8}) == {"name": "vq", "codebook_size": 8}
    assert MULTISCALE["quantizer_kwargs"]["codebook_size"] == 64  # inputs untouched


def test_nested_keys_and_partial_mappings_merge_into_the_yaml(tmp_path):
    """Regression: --quantizer.quantizer_kwargs.codebook_size became a literal key 'quantizer_kwargs.codebook_size'."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: vqgan\nquantizer:\n  name: multiscale\n  scales: [1, 2, 4]\n  quantizer: attention\n"
                   "  quantizer_kwargs: {codebook_size: 64, hidden_dim: 8}\n")  # fmt: skip
    c = TrainingConfig.from_args(["--config", str(cfg), "--quantizer.quantizer_kwargs.codebook_size", "16384",
                                  "--quantizer", "{shared_codebook: false}"])  # fmt: skip
    assert c.quantizer == {**MULTISCALE, "shared_codebook": False,
                           "quantizer_kwargs": {"codebook_size": 16384, "hidden_dim": 8}}  # fmt: skip
    # A later --config file merges over an earlier one; a new quantizer name starts afresh.
    other = tmp_path / "d.yaml"
    other.write_text("quantizer: {name: vq, codebook_size: 16}\n")
    assert TrainingConfig.from_args(["--config", str(cfg), "--config", str(other)]).quantizer == {
        "name": "vq", "codebook_size": 16}  # fmt: skip


def test_a_partial_quantizer_merges_into_the_preset(tmp_path):
    """Regression: ``preset: flux-vae`` + a partial --quantizer silently dropped the FLUX scales."""
    from diffusers import AutoencoderKL

    from coda_hf.models.presets import get_preset
    from coda_hf.training.models import build_model

    torch.manual_seed(0)  # a FLUX-shaped VAE (16 channels, 8x), tiny widths
    AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=16, norm_num_groups=8,
                  layers_per_block=1).save_pretrained(tmp_path / "vae")  # fmt: skip
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: coda\npreset: flux-vae\npretrained_vae: {tmp_path / 'vae'}\n")
    config = TrainingConfig.from_args(["--config", str(cfg), "--quantizer", "{name: multiscale, quantizer_kwargs: {hidden_dim: 8}}",
                                       "--quantizer.quantizer_kwargs.codebook_size", "16", "--model_kwargs.lora.rank", "2"])  # fmt: skip
    model = build_model(config)
    flux = get_preset("flux-vae")
    assert model.quantizer.scales == flux["quantizer"]["scales"]  # the preset's FLUX scales survive
    inner = model.quantizer.quantizers[0]
    assert (inner.codebook_size, inner.hidden_dim) == (16, 8) and model.quantizer.shared_codebook
    assert model.config.decoder_lora_rank == 2 and model.config.decoder_lora_target_modules == flux["lora"]["target_modules"]
    # Training settings never enter the model config.
    assert not {f.name for f in dataclasses.fields(TrainingConfig)} & set(model.config) - {"quantizer"}


@pytest.mark.parametrize(
    "cls, argv, message",
    [
        (TrainingConfig, ["--model", "vqgan", "--learnig_rate", "1"], "unknown option --learnig_rate (did you mean --learning_rate?)"),
        (TrainingConfig, ["--model", "vqgan", "--use_emma"], "unknown option --use_emma (did you mean --use_ema?)"),
        (MaskGitTrainingConfig, ["--tokenizer", "t", "--output_dir", "o", "--train_data_dir", "d", "--hiden_size", "8"],
         "unknown option --hiden_size (did you mean --hidden_size?)"),
        (MaskGitTrainingConfig, ["--tokenizer", "t", "--train_data_dir", "d"], "missing required option(s) --output_dir"),
        (TrainingConfig, ["--model", "vqgan", "--quantizer.codebook_size"], "--quantizer.codebook_size needs a value"),
        (TrainingConfig, ["--model", "vqgan", "--resolution.x", "1"], "option resolution is not a mapping"),
    ],
)
def test_unknown_options_name_the_closest_valid_one(cls, argv, message):
    with pytest.raises(ValueError, match=__import__("re").escape(message)):
        cls.from_args(argv)


def test_an_unknown_yaml_key_is_named_with_its_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: vqgan\ngan_wieght: 0.5\n")
    with pytest.raises(ValueError, match=r"c.yaml: unknown option gan_wieght \(did you mean gan_weight\?\)"):
        TrainingConfig.from_yaml(cfg)


def test_types_lists_and_none():
    t = Toy.from_args(["--steps", "2,3", "--rate=1", "--name", "none", "--nested.a.b", "[1, 2]"])
    assert t == Toy(steps=[2, 3], rate=1.0, name=None, nested={"a": {"b": [1, 2]}})
    assert Toy.from_args(["--steps", "[4]", "--name", "x"]).steps == [4]
    with pytest.raises(ValueError, match="option rate expects FLOAT"):
        Toy.from_args(["--rate", "fast"])


@pytest.mark.parametrize("cls", [TrainingConfig, MaskGitTrainingConfig, Toy])
def test_help_lists_every_option_with_its_default(cls, capsys):
    with pytest.raises(SystemExit) as exit_:
        cls.from_args(["--help"], prog="script.py")
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: script.py")
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  --")}
    for f in dataclasses.fields(cls):
        line = lines[f"--{f.name}"]
        assert "(default: " in line or "(required)" in line, line
    assert "(default: 0.5)" in Toy.help_text() and "(default: [])" in Toy.help_text()


def test_one_default_per_setting():
    """Settings that feed a constructor take its default (not a copy that could drift)."""
    import inspect

    from coda_hf.losses import ReconstructionLoss
    from coda_hf.maskgit import MaskGitConfig

    loss = inspect.signature(ReconstructionLoss).parameters
    for name in ("l1_weight", "l2_weight", "perceptual_weight", "gan_weight", "gan_loss", "adaptive_weight", "disc_start"):
        assert getattr(TrainingConfig, name) == loss[name].default, name
    prior = inspect.signature(MaskGitConfig).parameters
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads"):
        assert dataclasses.fields(MaskGitTrainingConfig)[[f.name for f in dataclasses.fields(MaskGitTrainingConfig)].index(name)].default == prior[name].default
    # The training config holds no quantizer default: the preset's or the model's own applies.
    assert TrainingConfig.__dataclass_fields__["quantizer"].default_factory() == {}


def test_every_cli_command_shows_its_defaults():
    from coda_hf.cli import build_parser

    parser = build_parser()
    commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)][0].choices
    for name, sub in commands.items():
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        for command in [sub, *(nested[0].choices.values() if nested else [])]:
            text = command.format_help()
            for action in command._actions:
                if action.option_strings and action.help not in (None, argparse.SUPPRESS) and action.dest != "help":
                    assert "default" in command._get_formatter()._get_help_string(action), (name, action.dest)
            assert text


@pytest.mark.slow
@pytest.mark.parametrize("script", ["examples/train_tokenizer.py", "examples/train_maskgit.py", "benchmarks/reproduce.py",
                                    "benchmarks/check_training_reproducible.py", "benchmarks/bench_quantizers.py"])
def test_scripts_print_their_help(script):
    """Regression: ``python examples/train_tokenizer.py --help`` crashed (unknown option --help)."""
    proc = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, env=script_env(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout and "default" in proc.stdout
