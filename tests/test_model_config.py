"""One config mechanism for the models: the quantizer spec is checked and typed by the quantizer's own signature
(unknown names answered with the closest valid one, nested stacks included), the transformers config is derived
from CodaVQModel's signature, and checkpoints saved before (tests/fixtures/saved_before, made by
tests/fixtures/make_saved_models_before.py at commit 084d266) load and compute the same."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import pytest
import torch
import transformers
from _helpers_coda import tiny_vae
from safetensors.torch import load_file

import coda_hf.transformers_integration as ti
from coda_hf.models import CodaVQModel, VQGANModel
from coda_hf.quantizers import build_quantizer
from coda_hf.quantizers.base import quantizer_config

BEFORE = Path(__file__).resolve().parent / "fixtures" / "saved_before"
TINY_VQGAN = {"block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 8, "latent_channels": 4,
              "embed_dim": 4}  # fmt: skip


def test_checkpoints_saved_before_load_and_compute_the_same():
    golden = load_file(str(BEFORE / "outputs.safetensors"))
    images = golden["images"]
    coda = CodaVQModel.from_pretrained(BEFORE / "coda").eval()
    vqgan = VQGANModel.from_pretrained(BEFORE / "vqgan").eval()
    auto = transformers.AutoModel.from_pretrained(BEFORE / "coda").eval()
    saved = json.loads((BEFORE / "coda" / "config.json").read_text())["quantizer"]
    assert coda.config.quantizer == saved  # the old config reads back unchanged
    with torch.no_grad():
        for name, model in (("coda", coda), ("vqgan", vqgan)):
            encoded = model.encode(images)
            assert torch.equal(encoded.token_ids, golden[f"{name}_token_ids"]), name
            torch.testing.assert_close(model.decode(encoded.indices), golden[f"{name}_reconstruction"], rtol=0, atol=1e-5)
        assert torch.equal(auto(pixel_values=images).token_ids, golden["coda_token_ids"])


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "multiscale", "scales": [1, 2], "quantizer_kwargs": {"codebok_size": 8}},
         r"quantizer\.quantizer_kwargs: unknown option 'codebok_size' \(did you mean 'codebook_size'\?\)"),
        ({"name": "multiscal", "scales": [1, 2]}, r"unknown quantizer 'multiscal' \(did you mean 'multiscale'\?\)"),
        ({"name": "multiscale", "scale": [1, 2]}, r"quantizer: unknown option 'scale' \(did you mean 'scales'\?\)"),
        ({"name": "residual", "quantizer": "attentio"}, r"quantizer\.quantizer_kwargs: unknown quantizer 'attentio' "
                                                        r"\(did you mean 'attention'\?\)"),
        ({"name": "multiscale", "scales": [1, 2], "quantizer_kwargs": {"codebook_size": "many"}},
         r"quantizer\.quantizer_kwargs: option codebook_size expects INT; got 'many'"),
        ({"name": "vq", "codebook_size": 16, "beta": [0.1]}, r"quantizer: option beta expects FLOAT"),
        ({"codebook_size": 16}, r"quantizer config needs a 'name'"),
    ],
)
def test_model_quantizer_spec_is_checked_by_the_quantizer_signature(spec, message):
    with pytest.raises(ValueError, match=message):
        CodaVQModel(vae_config=dict(tiny_vae().config), quantizer=spec)
    with pytest.raises(ValueError, match=message):
        VQGANModel(**TINY_VQGAN, quantizer=spec)


def test_quantizer_spec_values_are_typed():
    """A YAML or command-line string becomes the argument's type; the model config stores the typed values."""
    spec = {"name": "multiscale", "scales": "[1, 2]", "quantizer": "vq",
            "quantizer_kwargs": {"codebook_size": "16", "beta": 1}}  # fmt: skip
    assert quantizer_config(spec) == {"name": "multiscale", "scales": [1, 2], "quantizer": "vq",
                                      "quantizer_kwargs": {"codebook_size": 16, "beta": 1.0}}  # fmt: skip
    model = VQGANModel(**TINY_VQGAN, quantizer=spec)
    assert model.config.quantizer["quantizer_kwargs"] == {"codebook_size": 16, "beta": 1.0}
    assert model.config.quantizer["scales"] == [1, 2] and model.quantizer.codebook_size == 16
    assert build_quantizer("vq", dim=4, codebook_size=16.0).codebook_size == 16  # whole floats are ints
    with pytest.raises(ValueError, match="option codebook_size expects INT; got 16.5"):
        build_quantizer("vq", dim=4, codebook_size=16.5)


def test_transformers_config_fields_are_the_model_signature():
    parameters = inspect.signature(CodaVQModel.__init__).parameters
    arguments = {n: p.default for n, p in parameters.items() if n not in ("self", "model_type")}
    fields = {f.name: f for f in dataclasses.fields(ti.CodaVQConfig)}
    assert ti.CODA_CONFIG_KEYS == tuple(arguments)
    assert all(fields[name].default == default for name, default in arguments.items())
    assert ti.CodaVQConfig().to_coda_kwargs() == arguments
    assert ti.CodaVQConfig.model_type == "coda_vq"

    def constructor(self, width: int = 3, names: list[str] = ["a"], flag: bool | None = None, model_type: str = "x"):  # noqa: B006
        pass

    namespace = ti.config_fields(constructor, skip=("model_type",))
    assert namespace["__annotations__"] == {"width": int, "names": list[str], "flag": bool | None}
    assert namespace["width"] == 3 and namespace["names"].default_factory() == ["a"]  # a copy per instance

    def required(self, width: int):
        pass

    with pytest.raises(TypeError, match="'width' has no default"):
        ti.config_fields(required)
