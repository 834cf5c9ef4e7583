"""diffusers' model and pipeline contracts on our classes, in the shape of diffusers' shared test mixins
(``ModelTesterMixin`` / ``TrainingTesterMixin`` / ``PipelineTesterMixin``), written from what the contracts require.

Models: :class:`CodaVQModel` and :class:`VQGANModel` (``forward(sample, return_dict)``, save/load with ``variant``,
``max_shard_size``, ``safe_serialization``, fp16/bf16 loading, loading info, determinism, training).
Pipeline: :class:`CodaMaskGitPipeline` (one generator per image, every ``output_type``, nested ``class_labels``,
dict/tuple outputs, a pipeline save that forwards ``variant`` / ``max_shard_size`` to the tokenizer).
"""

from __future__ import annotations

import inspect
import json
import os

import numpy as np
import PIL.Image
import pytest
import torch
from _helpers_coda import TINY_QUANTIZER
from _helpers_maskgit import tiny_pipeline
from diffusers.utils import SAFE_WEIGHTS_INDEX_NAME, _add_variant

from coda_hf.models import CodaVQModel, CodaVQOutput, VQGANModel
from coda_hf.models.loading import CheckpointError
from coda_hf.pipelines.maskgit import CodaMaskGitPipeline

TINY_VAE = {
    "block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2, "latent_channels": 4, "norm_num_groups": 8, "sample_size": 32,
}  # fmt: skip
INIT_DICTS = {
    CodaVQModel: {"vae_config": TINY_VAE, "quantizer": TINY_QUANTIZER, "encoder_lora_rank": 2, "decoder_lora_rank": 2},
    VQGANModel: {
        "block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 4, "latent_channels": 4,
        "embed_dim": 4, "mid_block_add_attention": False, "quantizer": {"name": "vq", "codebook_size": 16},
    },
}  # fmt: skip


@pytest.fixture(params=[CodaVQModel, VQGANModel], ids=["coda", "vqgan"])
def model_class(request):
    return request.param


def _model(model_class):
    torch.manual_seed(0)
    return model_class(**INIT_DICTS[model_class]).eval()


def _sample(batch: int = 2) -> torch.Tensor:
    """(B, 3, 32, 32) images in [-1, 1] (the diffusers autoencoder input ``sample``)."""
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _first(model, sample) -> torch.Tensor:
    with torch.no_grad():
        return model(sample, return_dict=False)[0]


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k].to(sa[k].dtype)) for k in sa)


def _assert_nested_equal(a, b):
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_nested_equal(x, y)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_nested_equal(a[k], b[k])
    else:
        torch.testing.assert_close(a, b, atol=0, rtol=0)


# ----------------------------------------------------------------------------------------- models
def test_forward_takes_sample_and_return_dict_both_ways(model_class):
    model, x = _model(model_class), _sample()
    assert list(inspect.signature(model.forward).parameters)[:2] == ["sample", "return_dict"]
    with torch.no_grad():
        out = model(sample=x)
        tup = model(x, return_dict=False)
    assert isinstance(out, CodaVQOutput) and isinstance(tup, tuple) and out.sample.shape == x.shape
    _assert_nested_equal(tup, out.to_tuple())  # same values, same order as the typed output
    assert list(out.keys())[0] == "sample" and tup[0] is not None


def test_images_is_a_deprecated_alias_of_sample(model_class):
    model, x = _model(model_class), _sample()
    with pytest.warns(FutureWarning, match="sample"), torch.no_grad():
        old = model(images=x)
    torch.testing.assert_close(old.sample, _first(model, x), atol=0, rtol=0)
    with pytest.raises(ValueError, match="not both"):
        model(x, images=x)
    with pytest.raises(ValueError, match="sample"):
        model()
    with pytest.raises(TypeError):
        model(x, retrun_dict=False)  # a typo is an error, never dropped


def test_determinism(model_class):
    model, x = _model(model_class), _sample()
    torch.testing.assert_close(_first(model, x), _first(model, x), atol=1e-5, rtol=0)


def test_save_load_with_loading_info(model_class, tmp_path):
    model, x = _model(model_class), _sample()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded, info = model_class.from_pretrained(tmp_path, output_loading_info=True)
    assert {k: list(v) for k, v in info.items()} == {
        "missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []
    }  # fmt: skip
    _assert_same_weights(model, loaded)
    torch.testing.assert_close(_first(loaded.eval(), x), _first(model, x), atol=5e-5, rtol=5e-5)


def test_save_load_variant(model_class, tmp_path):
    model, x = _model(model_class), _sample()
    model.save_pretrained(tmp_path, variant="fp16")
    assert (tmp_path / "diffusion_pytorch_model.fp16.safetensors").is_file()
    loaded = model_class.from_pretrained(tmp_path, variant="fp16").eval()
    torch.testing.assert_close(_first(loaded, x), _first(model, x), atol=5e-5, rtol=0)
    with pytest.raises(OSError, match="diffusion_pytorch_model"):
        model_class.from_pretrained(tmp_path)  # no unvarianted weights in that directory


@pytest.mark.parametrize("variant", [None, "fp16"])
def test_sharded_checkpoints(model_class, tmp_path, variant):
    model, x = _model(model_class), _sample()
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    model.save_pretrained(tmp_path, max_shard_size=f"{int(size * 0.75 / 2**10)}KB", variant=variant)
    index = json.loads((tmp_path / _add_variant(SAFE_WEIGHTS_INDEX_NAME, variant)).read_text())
    assert len(set(index["weight_map"].values())) >= 2  # really sharded
    loaded = model_class.from_pretrained(tmp_path, variant=variant).eval()
    torch.testing.assert_close(_first(loaded, x), _first(model, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("safe", [True, False])
def test_safe_serialization(model_class, tmp_path, safe):
    model, x = _model(model_class), _sample()
    model.save_pretrained(tmp_path, safe_serialization=safe)
    name = "diffusion_pytorch_model.safetensors" if safe else "diffusion_pytorch_model.bin"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("diffusion_pytorch_model")) == [name]
    if not safe:  # diffusers writes the pickle as asked; the package's loading rule refuses to read one
        with pytest.raises(CheckpointError, match="safetensors only"):
            model_class.from_pretrained(tmp_path)
        return
    torch.testing.assert_close(_first(model_class.from_pretrained(tmp_path).eval(), x), _first(model, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_load(model_class, tmp_path, dtype):
    model = _model(model_class).to(dtype)
    model.save_pretrained(tmp_path)
    assert model_class.from_pretrained(tmp_path, torch_dtype=dtype).dtype == dtype
    loaded = model_class.from_pretrained(tmp_path)  # a half-precision checkpoint upcast on load: same values
    assert all(torch.equal(loaded.state_dict()[k].to(dtype), v) for k, v in model.state_dict().items())


def test_save_pretrained_names_the_diffusers_arguments():
    """DiffusionPipeline.save_pretrained forwards only the arguments a component's signature names."""
    for model_class in (CodaVQModel, VQGANModel):
        params = inspect.signature(model_class.save_pretrained).parameters
        for name in ("is_main_process", "save_function", "safe_serialization", "variant", "max_shard_size", "push_to_hub"):
            assert name in params, (model_class.__name__, name)


def test_training_step_reaches_the_trainable_weights(model_class):
    model = _model(model_class).train()
    out = model(_sample())
    (torch.nn.functional.mse_loss(out.sample, _sample()) + out.loss).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for n, p in trainable if "lora_A" in n or "quant_conv" in n)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in trainable)


# ----------------------------------------------------------------------------------------- pipeline
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_pipeline_call_signature():
    params = inspect.signature(CodaMaskGitPipeline.__call__).parameters
    for name in ("class_labels", "num_inference_steps", "guidance_scale", "generator", "output_type", "return_dict"):
        assert name in params and (name == "class_labels" or params[name].default is not inspect.Parameter.empty)
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


@pytest.mark.parametrize("guidance_scale", [1.0, 2.0])
def test_one_generator_per_image(guidance_scale):
    """Image i of a batch with generators [g_0, ..., g_{B-1}] is the image g_i gives alone."""
    pipe = tiny_pipeline()
    batch = pipe(class_labels=[[1]] * 3, generator=[_gen(i) for i in range(3)], guidance_scale=guidance_scale,
                 output_type="pt")  # fmt: skip
    assert batch.images.shape[0] == 3
    for i in range(3):
        alone = pipe(class_labels=[1], generator=_gen(i), guidance_scale=guidance_scale, output_type="pt")
        assert torch.equal(batch.tokens[i], alone.tokens[0])
        torch.testing.assert_close(batch.images[i], alone.images[0], atol=1e-5, rtol=0)
    assert not torch.equal(batch.tokens[0], batch.tokens[1])  # different seeds, different images


def test_every_output_type_and_their_equivalence():
    pipe = tiny_pipeline()
    out = {t: pipe(class_labels=[0, 3], generator=_gen(0), output_type=t) for t in ("pil", "np", "pt", "latent")}
    assert all(torch.equal(o.tokens, out["pt"].tokens) for o in out.values())  # same generator, same tokens
    pt, arr, pil = out["pt"].images, out["np"].images, out["pil"].images
    assert isinstance(pt, torch.Tensor) and pt.shape == (2, 3, 32, 32) and 0 <= pt.min() and pt.max() <= 1
    assert isinstance(arr, np.ndarray) and arr.shape == (2, 32, 32, 3) and arr.dtype == np.float32
    assert np.abs(pt.permute(0, 2, 3, 1).numpy() - arr).max() < 1e-4
    assert all(isinstance(im, PIL.Image.Image) and im.size == (32, 32) for im in pil)
    assert np.abs(np.asarray(pil[0], dtype=np.float32) - (arr[0] * 255).round()).max() < 2
    latent = out["latent"].images  # a token prior's latents: the undecoded token ids
    assert latent.dtype == torch.long and latent.shape == (2, 21) and torch.equal(latent, out["pt"].tokens)


def test_dict_and_tuple_outputs_are_equal():
    pipe = tiny_pipeline()
    as_dict = pipe(class_labels=[2], generator=_gen(1), output_type="pt")
    as_tuple = pipe(class_labels=[2], generator=_gen(1), output_type="pt", return_dict=False)
    assert isinstance(as_tuple, tuple)
    _assert_nested_equal(as_tuple, as_dict.to_tuple())


def test_batched_class_labels_forms():
    pipe = tiny_pipeline()
    flat = pipe(class_labels=[1, 2, 3], generator=_gen(4), output_type="latent").tokens
    for labels in ([[1], [2], [3]], ((1, 2), [3]), torch.tensor([[1], [2], [3]]), np.array([1, 2, 3])):
        assert torch.equal(pipe(class_labels=labels, generator=_gen(4), output_type="latent").tokens, flat)


def test_pipeline_save_forwards_variant_and_shard_size_to_the_tokenizer(tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "v", variant="fp16")
    names = set(os.listdir(tmp_path / "v" / "tokenizer"))
    assert "diffusion_pytorch_model.fp16.safetensors" in names and "diffusion_pytorch_model.safetensors" not in names
    assert "preprocessor_config.json" in names
    loaded = CodaMaskGitPipeline.from_pretrained(tmp_path / "v", variant="fp16")
    _assert_same_weights(pipe.tokenizer, loaded.tokenizer)
    _assert_same_weights(pipe.transformer, loaded.transformer)
    pipe.save_pretrained(tmp_path / "s", max_shard_size="20KB")
    assert (tmp_path / "s" / "tokenizer" / SAFE_WEIGHTS_INDEX_NAME).is_file()
    _assert_same_weights(pipe.tokenizer, CodaMaskGitPipeline.from_pretrained(tmp_path / "s").tokenizer)
