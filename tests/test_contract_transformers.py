"""transformers' model, config and image-processor contracts on our classes, in the shape of transformers' shared
test mixins (``ModelTesterMixin``, ``ConfigTester``, ``ImageProcessingTestMixin``), written from what the contracts
require.

* :class:`MaskGitTransformer` + :class:`MaskGitConfig`: ``return_dict`` / ``output_hidden_states`` /
  ``output_attentions`` with transformers' semantics, eager vs SDPA, save/load (``variant``, shards, dtypes,
  ``state_dict``, loading info, the meta-device guard), input embeddings.
* :class:`CodaImageProcessor`: save/load, PIL / numpy / torch inputs, ``do_pad`` / ``pad_size``.
* :class:`CodaVQForTokenization`: ``post_init``, ``return_dict``, transformers' ``save_pretrained`` /
  ``from_pretrained`` arguments on the diffusers directory.
"""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch
import transformers
from _helpers_coda import images, tiny_coda, tiny_vae
from PIL import Image

import coda_hf.transformers_integration as ti
from coda_hf.image_processing import CodaImageProcessor
from coda_hf.maskgit import MaskGitConfig, MaskGitTransformer
from coda_hf.models import CodaVQModel
from coda_hf.models.loading import CheckpointError


# ----------------------------------------------------------------------------------------- MaskGitConfig
def _config(**kwargs) -> MaskGitConfig:
    base = dict(
        level_shapes=[[1, 1], [2, 2], [4, 4]], codebook_size=16, num_classes=4, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, hidden_dropout_prob=0.0, attention_dropout_prob=0.0,
    )  # fmt: skip
    return MaskGitConfig(**{**base, **kwargs})


def test_config_round_trips(tmp_path):
    config = _config(intermediate_size=48)
    assert MaskGitConfig.from_dict(json.loads(config.to_json_string())).to_dict() == config.to_dict()
    config.to_json_file(tmp_path / "c.json")
    assert MaskGitConfig.from_json_file(tmp_path / "c.json").to_dict() == config.to_dict()
    config.save_pretrained(tmp_path / "dir" / "sub")
    again = MaskGitConfig.from_pretrained(tmp_path / "dir", subfolder="sub")
    assert again.to_dict() == config.to_dict() and again.num_tokens == 21
    assert MaskGitConfig().num_tokens == 256  # every argument has a default
    common = _config(output_hidden_states=True, return_dict=False)
    assert common.output_hidden_states is True and common.return_dict is False


def test_config_leaves_the_heads_check_to_the_model():
    config = _config(hidden_size=30)  # 30 % 4 != 0: a config alone may hold it (transformers' convention)
    with pytest.raises(ValueError, match="divisible"):
        MaskGitTransformer(config)


# ----------------------------------------------------------------------------------------- MaskGitTransformer
def _prior(**kwargs) -> MaskGitTransformer:
    torch.manual_seed(0)
    return MaskGitTransformer(_config(**kwargs)).eval()


def _inputs(batch: int = 2) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(0, 17, (batch, 21), generator=gen),  # codes 0..15 and the mask 16
            "class_labels": torch.randint(0, 5, (batch,), generator=gen)}  # fmt: skip


def _logits(model, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(**_inputs(), **kwargs).logits


def test_forward_arguments_are_explicit():
    params = inspect.signature(MaskGitTransformer.forward).parameters
    assert list(params)[1:] == [
        "input_ids", "class_labels", "labels", "output_attentions", "output_hidden_states", "return_dict"
    ]  # fmt: skip
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    with pytest.raises(TypeError):
        _prior()(**_inputs(), output_hidden_state=True)  # a typo is an error, never swallowed


def test_return_dict_both_ways_equal_values():
    model, inputs = _prior(), _inputs()
    labels = torch.where(inputs["input_ids"] == 16, 3, -100)
    with torch.no_grad():
        as_dict = model(**inputs, labels=labels, output_hidden_states=True, output_attentions=True)
        as_tuple = model(**inputs, labels=labels, output_hidden_states=True, output_attentions=True, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 4  # loss, logits, hidden_states, attentions
    for a, b in zip(as_tuple, as_dict.to_tuple()):
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            torch.testing.assert_close(x, y, atol=1e-6, rtol=0)
    assert torch.equal(as_tuple[1], as_dict.logits) and as_dict.loss.ndim == 0
    model.config.return_dict = False  # the config default applies when the argument is not given
    assert isinstance(model(**inputs), tuple)


def test_hidden_states_when_asked():
    model = _prior()
    with torch.no_grad():
        assert model(**_inputs()).hidden_states is None
        out = model(**_inputs(), output_hidden_states=True)
    assert len(out.hidden_states) == 3 and all(h.shape == (2, 22, 32) for h in out.hidden_states)
    # The last one is what the head reads (class token at position 0 dropped): they are the real states.
    torch.testing.assert_close(model.head(model.final_norm(out.hidden_states[-1][:, 1:])), out.logits)
    model.config.output_hidden_states = True
    assert len(model(**_inputs()).hidden_states) == 3


def test_attentions_when_asked_and_eager_is_required():
    eager = _prior(attn_implementation="eager")
    assert eager.config._attn_implementation == "eager"
    with torch.no_grad():
        out = eager(**_inputs(), output_attentions=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 22, 22)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 4, 22))  # softmax rows
    eager.config.output_attentions = True
    assert len(eager(**_inputs()).attentions) == 2
    sdpa = _prior()
    assert sdpa.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="eager"):
        sdpa.config.output_attentions = True  # transformers: attention maps need the eager kernel
    with torch.no_grad():
        fallback = sdpa(**_inputs(), output_attentions=True)  # this call runs eager (with a warning)
    assert len(fallback.attentions) == 2
    torch.testing.assert_close(fallback.attentions[1], out.attentions[1], atol=1e-6, rtol=0)


def test_eager_and_sdpa_agree(tmp_path):
    _prior().save_pretrained(tmp_path)
    sdpa = MaskGitTransformer.from_pretrained(tmp_path, attn_implementation="sdpa")
    eager = MaskGitTransformer.from_pretrained(tmp_path, attn_implementation="eager")
    assert (sdpa.config._attn_implementation, eager.config._attn_implementation) == ("sdpa", "eager")
    with torch.no_grad():
        a = sdpa(**_inputs(), output_hidden_states=True)
        b = eager(**_inputs(), output_hidden_states=True)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    for x, y in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    sdpa.set_attn_implementation("eager")  # switchable at run time
    torch.testing.assert_close(_logits(sdpa), b.logits, atol=0, rtol=0)
    with pytest.raises(ValueError):
        sdpa.set_attn_implementation("flash_attention_2")  # not supported: refused, not ignored


def test_determinism_and_training_step():
    model = _prior()
    torch.testing.assert_close(_logits(model), _logits(model), atol=1e-5, rtol=0)
    model.train()
    inputs = _inputs()
    model(**inputs, labels=torch.where(inputs["input_ids"] == 16, 3, -100)).loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_input_embeddings():
    model = _prior()
    assert model.get_input_embeddings() is model.token_embedding and model.get_input_embeddings().num_embeddings == 17
    before = _logits(model)
    new = torch.nn.Embedding(17, 32)
    model.set_input_embeddings(new)
    assert model.get_input_embeddings() is new and not torch.allclose(_logits(model), before)


def test_save_load_loading_info_and_safetensors(tmp_path):
    model = _prior()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()  # transformers 5 always writes safetensors
    loaded, info = MaskGitTransformer.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"))
    assert not loaded.training and torch.equal(_logits(loaded), _logits(model))
    auto = transformers.AutoModel.from_pretrained(tmp_path)
    assert isinstance(auto, MaskGitTransformer) and torch.equal(_logits(auto), _logits(model))


def test_save_load_variant_and_shards(tmp_path):
    model = _prior()
    model.save_pretrained(tmp_path / "v", variant="fp16")
    assert (tmp_path / "v" / "model.fp16.safetensors").is_file()
    assert torch.equal(_logits(MaskGitTransformer.from_pretrained(tmp_path / "v", variant="fp16")), _logits(model))
    with pytest.raises(OSError):
        MaskGitTransformer.from_pretrained(tmp_path / "v")
    model.save_pretrained(tmp_path / "s", max_shard_size="20KB")
    index = json.loads((tmp_path / "s" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2
    assert torch.equal(_logits(MaskGitTransformer.from_pretrained(tmp_path / "s")), _logits(model))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_load(tmp_path, dtype):
    _prior().save_pretrained(tmp_path)
    loaded = MaskGitTransformer.from_pretrained(tmp_path, dtype=dtype)
    assert loaded.dtype == dtype and all(p.dtype == dtype for p in loaded.parameters())
    if dtype == torch.bfloat16:  # CPU runs bf16 kernels
        assert torch.isfinite(_logits(loaded).float()).all()


def test_state_dict_loading_and_meta_device(tmp_path):
    model = _prior()
    loaded = MaskGitTransformer.from_pretrained(None, config=model.config, state_dict=model.state_dict())
    assert torch.equal(_logits(loaded), _logits(model))
    with torch.device("meta"):
        empty = MaskGitTransformer(model.config)  # can be initialised on the meta device
    assert all(p.is_meta for p in empty.parameters())
    model.save_pretrained(tmp_path)
    with torch.device("meta"), pytest.raises(RuntimeError, match="meta"):
        MaskGitTransformer.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------------------- CodaImageProcessor
def _array(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_image_processor_save_load(tmp_path):
    proc = CodaImageProcessor(size={"shortest_edge": 32}, size_divisor=8, do_pad=True, pad_size={"height": 48, "width": 64})
    proc.save_pretrained(tmp_path)
    for again in (CodaImageProcessor.from_pretrained(tmp_path), transformers.AutoImageProcessor.from_pretrained(tmp_path)):
        assert isinstance(again, CodaImageProcessor) and again.to_dict() == proc.to_dict()
    assert CodaImageProcessor.from_json_file(tmp_path / "preprocessor_config.json").to_dict() == proc.to_dict()


def test_image_processor_pil_numpy_torch_inputs_agree():
    proc = CodaImageProcessor(size={"shortest_edge": 32}, size_divisor=8)
    a = _array(40, 56)
    outs = [proc(x, return_tensors="pt")["pixel_values"]
            for x in (Image.fromarray(a), a, torch.from_numpy(a).permute(2, 0, 1))]  # fmt: skip
    assert outs[0].shape == (1, 3, 32, 40) and outs[0].min() >= -1 and outs[0].max() <= 1
    assert all(torch.equal(o, outs[0]) for o in outs)
    batch = proc([a, a, a], return_tensors="pt")["pixel_values"]
    assert batch.shape == (3, 3, 32, 40) and torch.equal(batch[2], outs[0][0])


def test_do_pad_makes_one_tensor_from_mixed_sizes():
    proc = CodaImageProcessor(do_resize=False, size_divisor=8)
    ims = [_array(32, 48, seed=1), _array(40, 32, seed=2)]
    with pytest.raises(ValueError):
        proc(ims, return_tensors="pt")  # mixed sizes without padding: no single tensor
    padded = proc(ims, return_tensors="pt", do_pad=True)["pixel_values"]
    assert padded.shape == (2, 3, 40, 48)  # the batch's largest height and width, multiples of 8
    for i, a in enumerate(ims):
        alone = proc(a, return_tensors="pt")["pixel_values"][0]
        h, w = alone.shape[-2:]
        assert torch.equal(padded[i, :, :h, :w], alone)  # the image sits at the top left
        assert not padded[i, :, h:].any() and not padded[i, :, :, w:].any()  # pad value 0: mid-grey
    fixed = CodaImageProcessor(do_resize=False, size_divisor=8, do_pad=True, pad_size={"height": 48, "width": 56})
    assert fixed(ims, return_tensors="pt")["pixel_values"].shape == (2, 3, 48, 56)


def test_pad_size_must_suit_the_tokenizer():
    ims = [_array(32, 48), _array(40, 32)]
    with pytest.raises(ValueError, match="pad_size .* multiple of size_divisor 8"):
        CodaImageProcessor(do_resize=False, do_pad=True, pad_size={"height": 44, "width": 48})(ims)
    with pytest.raises(ValueError, match="pad_size"):
        CodaImageProcessor(do_resize=False, do_pad=True, pad_size={"height": 32, "width": 32})(ims)  # too small
    model = tiny_coda().eval()  # downsample factor 2
    proc = CodaImageProcessor(do_resize=False, size_divisor=model.downsample_factor, do_pad=True)
    pixels = proc([_array(30, 26), _array(22, 34)], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 3, 30, 34)
    with torch.no_grad():
        assert model.encode(pixels).token_ids.shape[0] == 2  # a padded batch tokenizes as is


# ----------------------------------------------------------------------------------------- CodaVQForTokenization
@pytest.fixture(scope="module")
def coda_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("coda")
    model = tiny_coda()
    model.save_pretrained(path)
    return path, model


def _tokens(model, x=None) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=images(2) if x is None else x).token_ids


def test_wrapper_runs_post_init_and_keeps_given_weights(coda_dir):
    path, coda = coda_dir
    config = ti.CodaVQConfig.from_pretrained(path)
    fresh = ti.CodaVQForTokenization(config)
    assert hasattr(fresh, "all_tied_weights_keys")  # set by post_init
    assert all(torch.isfinite(p).all() for p in fresh.parameters())
    wrapped = ti.CodaVQForTokenization(config, coda_model=coda)  # post_init must not re-initialise it
    assert all(torch.equal(a, b) for a, b in zip(wrapped.coda.state_dict().values(), coda.state_dict().values()))
    with pytest.raises(NotImplementedError, match="pixels"):
        wrapped.get_input_embeddings()  # a contract that does not apply says so
    with pytest.raises(NotImplementedError, match="pixels"):
        wrapped.set_input_embeddings(torch.nn.Embedding(2, 2))


def test_wrapper_return_dict_both_ways(coda_dir):
    path, coda = coda_dir
    model = ti.CodaVQForTokenization.from_pretrained(path)
    with torch.no_grad():
        as_dict = model(pixel_values=images(2))
        as_tuple = model(pixel_values=images(2), return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 3  # token_ids, indices, quantized
    assert torch.equal(as_tuple[0], as_dict.token_ids) and torch.equal(as_tuple[2], as_dict.quantized)
    assert all(torch.equal(a, b) for a, b in zip(as_tuple[1], as_dict.indices))
    assert torch.equal(as_dict.token_ids, coda.encode(images(2)).token_ids)


def test_wrapper_loading_info_dtype_and_config_overrides(coda_dir):
    path, coda = coda_dir
    model, info = ti.CodaVQForTokenization.from_pretrained(path, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"))
    assert not model.training and torch.equal(_tokens(model), coda.encode(images(2)).token_ids)
    for dtype in (torch.float16, torch.bfloat16):
        assert ti.CodaVQForTokenization.from_pretrained(path, dtype=dtype).coda.dtype == dtype
    placed = ti.CodaVQForTokenization.from_pretrained(path, device_map="cpu")
    assert torch.equal(_tokens(placed), _tokens(model))
    assert ti.CodaVQForTokenization.from_pretrained(path, sample_posterior=False).config.sample_posterior is False


def test_wrapper_meta_guard_and_state_dict_loading(coda_dir):
    path, coda = coda_dir
    with torch.device("meta"), pytest.raises(RuntimeError, match="meta"):
        ti.CodaVQForTokenization.from_pretrained(path)
    config = ti.CodaVQConfig.from_pretrained(path)
    model = ti.CodaVQForTokenization.from_pretrained(None, config=config, state_dict=coda.state_dict())
    assert torch.equal(_tokens(model), coda.encode(images(2)).token_ids)
    missing = next(k for k in coda.state_dict() if "lora_B" in k)
    partial = {k: v for k, v in coda.state_dict().items() if k != missing}
    with pytest.raises(CheckpointError, match="newly initialised"):  # the package's rule: no silent random weights
        ti.CodaVQForTokenization.from_pretrained(None, config=config, state_dict=partial)
    model, info = ti.CodaVQForTokenization.from_pretrained(
        None, config=config, state_dict=partial, output_loading_info=True, allow_mismatched_checkpoint=True
    )  # deliberate surgery: transformers' own behaviour
    assert info["missing_keys"] == {f"coda.{missing}"}
    assert model.coda.state_dict()[missing].abs().max() == 0  # a missing key gets the constructor's init (LoRA B = 0)


@pytest.mark.parametrize("variant, shard", [(None, False), ("fp16", False), (None, True), ("fp16", True)])
def test_wrapper_save_load_variant_and_shards(coda_dir, tmp_path, variant, shard):
    path, coda = coda_dir
    model = ti.CodaVQForTokenization.from_pretrained(path)
    model.save_pretrained(tmp_path, variant=variant, max_shard_size="100KB" if shard else "50GB")
    assert json.loads((tmp_path / "config.json").read_text())["_class_name"] == "CodaVQModel"  # diffusers format
    weights = [p.name for p in tmp_path.iterdir() if p.name.startswith("diffusion_pytorch_model")]
    assert (len(weights) > 2) == shard and all((".fp16" in w) == (variant is not None) for w in weights)
    for loader in (ti.CodaVQForTokenization, transformers.AutoModel):
        assert torch.equal(_tokens(loader.from_pretrained(tmp_path, variant=variant)), _tokens(model))
    assert torch.equal(CodaVQModel.from_pretrained(tmp_path, variant=variant).encode(images(2)).token_ids, _tokens(model))


def test_wrapper_save_arguments(coda_dir, tmp_path):
    path, coda = coda_dir
    params = inspect.signature(ti.CodaVQForTokenization.save_pretrained).parameters
    for name in ("is_main_process", "state_dict", "push_to_hub", "max_shard_size", "variant", "token"):
        assert name in params
    model = ti.CodaVQForTokenization.from_pretrained(path)
    other = tiny_coda(seed=3)
    model.save_pretrained(tmp_path / "sd", state_dict={f"coda.{k}": v for k, v in other.state_dict().items()})
    assert torch.equal(_tokens(ti.CodaVQForTokenization.from_pretrained(tmp_path / "sd")), other.encode(images(2)).token_ids)
    model.save_pretrained(tmp_path / "not-main", is_main_process=False)
    assert not (tmp_path / "not-main" / "config.json").exists()
    with pytest.raises(NotImplementedError, match="diffusers format"):
        model.save_pretrained(tmp_path / "dcp", distributed_checkpoint=True)
    with pytest.raises(RuntimeError, match="Missing key"):
        model.save_pretrained(tmp_path / "bad", state_dict={"coda.nope": torch.zeros(1)})


def test_wrapper_restores_non_persistent_buffers_and_refuses_bin(tmp_path):
    """FSQ keeps its constants in non-persistent buffers, which a meta-device load must rebuild; a pickled
    ``.bin`` checkpoint is refused (the package reads safetensors only)."""
    coda = CodaVQModel.from_vae(tiny_vae(), quantizer={"name": "fsq", "levels": [5, 5, 3, 3]}, lora={"rank": 2}).eval()
    coda.save_pretrained(tmp_path / "bin", safe_serialization=False)  # diffusion_pytorch_model.bin
    with pytest.raises(CheckpointError, match="safetensors only"):
        ti.CodaVQForTokenization.from_pretrained(tmp_path / "bin")
    coda.save_pretrained(tmp_path / "safe", variant="fp32", max_shard_size="20KB")  # a variant's shard index
    model = ti.CodaVQForTokenization.from_pretrained(tmp_path / "safe", variant="fp32")
    assert torch.equal(_tokens(model), coda.encode(images(2)).token_ids)
    buffers = dict(model.coda.named_buffers())
    assert all(torch.equal(buffers[k], v) for k, v in coda.named_buffers())
