"""Bad authors' checkpoints give a clear error naming the file and the key, and leave no output behind;
the real-size CODA-FLUX / CODA-MAR key layouts convert completely (zero-filled from the fixture manifests)."""

from __future__ import annotations

import pickle

import pytest
import torch
from _helpers_original import PRESETS, arch, files, manifest, zero_state_dict

from coda_hf.models import CodaVQModel
from coda_hf.models.original import OriginalCheckpointError, convert_original, load_original


class _Payload:
    """Unpickling this creates ``path``: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _convert_fails(
    tmp_path, vae, quantizer, match, preset="flux-vae", name="flux", error=OriginalCheckpointError
):
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(error, match=match):
        convert_original(vae, quantizer, preset, tmp_path / "out", architecture=arch(name))
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no partial folder


def _bad_vae(tmp_path, edit):
    state = torch.load(files("flux")[0], weights_only=True)
    edit(state)
    path = tmp_path / "vae_bad.pth"
    torch.save(state, path)
    return path


def test_missing_key_named(tmp_path):
    vae = _bad_vae(tmp_path, lambda s: s.pop("decoder.up_blocks.1.resnets.0.conv2.lora_layer.up.weight"))
    _convert_fails(tmp_path, vae, files("flux")[1], f"{vae}: does not match.*\n  missing keys \\(1\\): "
                   "decoder.up_blocks.1.resnets.0.conv2.lora_layer.up.weight$")  # fmt: skip


def test_wrong_shape_named(tmp_path):
    def edit(state):
        state["encoder.conv_out.bias"] = torch.zeros(31)

    vae = _bad_vae(tmp_path, edit)
    _convert_fails(
        tmp_path,
        vae,
        files("flux")[1],
        r"wrong shapes \(1\): encoder.conv_out.bias \[31\] \(expected \[32\]\)",
    )


def test_unexpected_key_named(tmp_path):
    def edit(state):
        state["decoder.conv_out.lora_layer.down.weight"] = torch.zeros(4, 8, 3, 3)

    vae = _bad_vae(tmp_path, edit)
    _convert_fails(
        tmp_path, vae, files("flux")[1], r"unexpected keys \(1\): decoder.conv_out.lora_layer.down.weight"
    )


def test_wrapped_training_checkpoint_refused(tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": torch.load(files("flux")[0], weights_only=True), "epoch": 3}, path)
    _convert_fails(
        tmp_path,
        path,
        files("flux")[1],
        f"{path}: not a plain state dict.*'model' \\(OrderedDict\\), 'epoch' \\(int\\)",
    )


def test_pickled_module_refused(tmp_path):
    path = tmp_path / "module.pth"
    torch.save(torch.nn.Conv2d(3, 8, 3), path)  # a whole object, not a state dict
    _convert_fails(
        tmp_path,
        files("flux")[0],
        path,
        f"{path}: refused by torch.load\\(weights_only=True\\).*torch.nn.modules.conv.Conv2d",
    )


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_never_runs(tmp_path, writer):
    marker, path = tmp_path / "ran", tmp_path / "quantizer.pth"
    if writer == "torch.save":
        torch.save({"attn.to_q.weight": _Payload(marker)}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(_Payload(marker), f, protocol=2)
    _convert_fails(
        tmp_path,
        files("flux")[0],
        path,
        f"{path}: refused by torch.load\\(weights_only=True\\).*io.open.*nothing in it was run",
    )
    assert not marker.exists()
    if writer == "pickle.dump":  # the payload is real: a full unpickle runs it
        with open(path, "rb") as f:
            pickle.load(f)
        assert marker.exists()


def test_truncated_file_named(tmp_path):
    data = files("mar")[0].read_bytes()
    path = tmp_path / "vae_ema.pth"
    path.write_bytes(data[: len(data) // 2])
    _convert_fails(
        tmp_path, path, files("mar")[1], f"{path}: cannot read it as a PyTorch state dict", "mar-vae", "mar"
    )


def test_missing_file_and_existing_output(tmp_path):
    _convert_fails(tmp_path, tmp_path / "nope.pth", files("flux")[1], "nope.pth", error=FileNotFoundError)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="already exists"):
        convert_original(*files("flux"), "flux-vae", tmp_path / "out", architecture=arch("flux"))
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    def broken_save(self, directory, *args, **kwargs):
        (directory / "config.json").write_text("{}")  # half-written
        raise OSError("No space left on device")

    monkeypatch.setattr(CodaVQModel, "save_pretrained", broken_save)
    _convert_fails(tmp_path, *files("flux"), "No space left", error=OSError)
    with pytest.raises(OSError, match="No space left"):  # parent folders made for the output go too
        convert_original(
            *files("flux"), "flux-vae", tmp_path / "new" / "deeper" / "out", architecture=arch("flux")
        )
    assert list(tmp_path.iterdir()) == []


def test_unknown_preset_and_override():
    with pytest.raises(ValueError, match="unknown preset 'sd-vae'"):
        load_original(*files("flux"), "sd-vae")
    with pytest.raises(ValueError, match=r"unknown keys \['rank'\]"):
        load_original(*files("flux"), "flux-vae", {"rank": 4})


# ---------------------------------------------------------------- real-size key layouts (zero weights)
@pytest.fixture(scope="module")
def released_size_files(tmp_path_factory):
    """Zero-filled ``vae.pth`` / ``quantizer.pth`` with every key and shape of the real checkpoints."""
    root = tmp_path_factory.mktemp("released")
    paths = {}
    for name in PRESETS:
        m = manifest(name)
        for part in ("vae", "quantizer"):
            paths[name, part] = root / f"{name}_{part}_ema.pth"
            torch.save(zero_state_dict(m["files"][f"{part}.pth"]), paths[name, part])
    return paths


@pytest.mark.parametrize("name,tokens,latent", [("flux", 2240, 32), ("mar", 680, 16)])
def test_released_layouts_convert_with_real_token_counts(released_size_files, name, tokens, latent):
    model = load_original(
        released_size_files[name, "vae"], released_size_files[name, "quantizer"], PRESETS[name]
    )
    counts = manifest(name)["counts"]
    state = model.state_dict()
    assert sum("lora_A" in k or "lora_B" in k for k in state) == counts["vae_lora_keys"]
    assert sum(state[k].numel() for k in state if k.startswith("vae.")) == counts["vae_params"]
    assert sum(p.numel() for p in model.quantizer.parameters()) == counts["quantizer_params"]
    assert model.codebook_size == {"flux": 65536, "mar": 16384}[name]
    assert model.num_tokens(256, 256) == tokens and model.latent_size(256, 256) == (latent, latent)
    with torch.no_grad():
        out = model.quantize(torch.randn(1, 16, latent, latent), with_losses=False)
    assert out.token_ids.shape == (1, tokens)


@pytest.mark.slow
@pytest.mark.parametrize("name,tokens", [("flux", 2240), ("mar", 680)])
def test_released_layouts_encode_256px_images(released_size_files, name, tokens):
    model = load_original(
        released_size_files[name, "vae"], released_size_files[name, "quantizer"], PRESETS[name]
    )
    with torch.no_grad():
        enc = model.encode(torch.zeros(1, 3, 256, 256))
    assert enc.token_ids.shape == (1, tokens)


@pytest.mark.parametrize("name,other", [("flux", "mar"), ("mar", "flux")])
def test_quantizer_of_the_other_preset_named(released_size_files, name, other, tmp_path):
    quantizer = released_size_files[other, "quantizer"]
    with pytest.raises(OriginalCheckpointError) as info:
        convert_original(released_size_files[name, "vae"], quantizer, PRESETS[name], tmp_path / "out")
    message = str(info.value)
    assert f"{quantizer}: does not match" in message and "codebooks.weight" in message
    assert f"is the CODA-{other.upper()} quantizer ({PRESETS[other]})" in message
    assert "VAE" not in message.split("\n")[0]  # the VAE itself is fine
    assert list(tmp_path.iterdir()) == []
