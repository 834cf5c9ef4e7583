"""CodaMaskGitPipeline: generation, classifier-free guidance, output types, save/load round trip."""

import json

import numpy as np
import PIL.Image
import pytest
import torch
from _helpers_maskgit import TinyMultiScaleTokenizer, tiny_pipeline, tiny_prior, tiny_vqgan_tokenizer

from coda_hf.maskgit import MaskGitScheduler, MaskGitTransformer
from coda_hf.pipelines.maskgit import CodaMaskGitPipeline, CodaMaskGitPipelineOutput
from coda_hf.quantizers.output import unflatten_indices


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_output_types():
    pipe = tiny_pipeline()
    assert pipe.image_size == (32, 32)
    pil = pipe(class_labels=[0, 3], generator=_gen(), output_type="pil")
    assert isinstance(pil, CodaMaskGitPipelineOutput)
    assert len(pil.images) == 2 and all(
        isinstance(im, PIL.Image.Image) and im.size == (32, 32) for im in pil.images
    )
    assert pil.tokens.shape == (2, 21) and pil.tokens.min() >= 0 and pil.tokens.max() < 16

    pt = pipe(class_labels=[0, 3], generator=_gen(), output_type="pt")
    assert torch.equal(pt.tokens, pil.tokens)  # same generator -> same tokens
    assert pt.images.shape == (2, 3, 32, 32) and pt.images.min() >= 0 and pt.images.max() <= 1  # diffusers' [0, 1]
    ref = pipe.tokenizer.decode(unflatten_indices(pt.tokens, [(1, 1), (2, 2), (4, 4)]))
    torch.testing.assert_close(pt.images, (ref.clamp(-1, 1) + 1) / 2)
    as_uint8 = torch.from_numpy(np.array(pil.images[1])).permute(2, 0, 1).float()
    torch.testing.assert_close(as_uint8, (pt.images[1] * 255).round(), atol=1.0, rtol=0)
    np_out = pipe(class_labels=[0, 3], generator=_gen(), output_type="np")
    assert isinstance(np_out.images, np.ndarray) and np_out.images.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(np_out.images, pt.images.permute(0, 2, 3, 1).numpy(), atol=1e-6)

    latent = pipe(class_labels=3, generator=_gen(), output_type="latent")
    assert latent.tokens.shape == (1, 21) and torch.equal(latent.images, latent.tokens)  # token ids, not decoded
    images, toks = pipe(class_labels=[1], generator=_gen(), output_type="latent", return_dict=False)
    assert torch.equal(images, toks) and toks.shape == (1, 21)
    with pytest.warns(FutureWarning, match="latent"):
        old = pipe(class_labels=3, generator=_gen(), output_type="tokens")  # deprecated alias
    assert torch.equal(old.images, latent.tokens)


def test_same_generator_same_images_different_seed_differs():
    pipe = tiny_pipeline()
    a = pipe(class_labels=[0, 1, 2], generator=_gen(7), output_type="pt", guidance_scale=2.0)
    b = pipe(class_labels=[0, 1, 2], generator=_gen(7), output_type="pt", guidance_scale=2.0)
    c = pipe(class_labels=[0, 1, 2], generator=_gen(8), output_type="pt", guidance_scale=2.0)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.images, b.images)
    assert not torch.equal(a.tokens, c.tokens)


def test_generation_runs_in_eval_mode_and_restores_it():
    pipe = tiny_pipeline(hidden_dropout_prob=0.5, attention_dropout_prob=0.5)
    pipe.transformer.train()
    a = pipe(class_labels=[0, 1], generator=_gen(2), output_type="latent").tokens
    b = pipe(class_labels=[0, 1], generator=_gen(2), output_type="latent").tokens
    assert torch.equal(a, b)  # no dropout noise
    assert pipe.transformer.training and not pipe.tokenizer.training


def test_num_inference_steps_calls_transformer_per_step():
    pipe = tiny_pipeline()
    calls = []
    pipe.transformer.register_forward_hook(lambda m, i, o: calls.append(m))
    pipe(class_labels=[0], num_inference_steps=5, generator=_gen(), output_type="latent")
    assert len(calls) == 5


def test_classifier_free_guidance_formula():
    pipe = tiny_pipeline()
    captured = {}
    orig_step = pipe.scheduler.step

    def spy(logits, i, sample, generator=None):
        captured.setdefault(i, logits)
        return orig_step(logits, i, sample, generator=generator)

    pipe.scheduler.step = spy
    pipe(class_labels=[2], num_inference_steps=1, guidance_scale=3.0, generator=_gen(), output_type="latent")
    start = torch.full((1, 21), 16)
    cond = pipe.transformer(start, torch.tensor([2])).logits
    uncond = pipe.transformer(start, torch.tensor([4])).logits
    torch.testing.assert_close(captured[0], uncond + 3.0 * (cond - uncond), atol=1e-5, rtol=1e-5)


def test_guidance_zero_is_unconditional():
    pipe = tiny_pipeline()
    guided = pipe(class_labels=[0, 1], guidance_scale=0.0, generator=_gen(3), output_type="latent").tokens
    uncond = pipe(class_labels=None, batch_size=2, generator=_gen(3), output_type="latent").tokens
    assert torch.equal(guided, uncond)


def test_bad_arguments():
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match="class_labels"):
        pipe(class_labels=[4])
    with pytest.raises(ValueError, match="class_labels"):
        pipe(class_labels=[0.5])
    with pytest.raises(ValueError, match="output_type"):
        pipe(class_labels=[0], output_type="numpy")
    with pytest.raises(ValueError, match="guidance_scale"):
        pipe(class_labels=[0], guidance_scale=-1.0)
    with pytest.raises(ValueError, match="generators for 3 images"):
        pipe(class_labels=[0, 1, 2], generator=[_gen(), _gen()])
    with pytest.raises(ValueError, match="generator"):
        pipe(class_labels=[0, 1], generator=[_gen(), 3])
    with pytest.raises(ValueError, match="class_labels"):
        pipe(class_labels=[[0], [True]])


def _library_multiscale_vqgan():
    from coda_hf.models.vqgan import VQGANModel

    quantizer = {
        "name": "multiscale",
        "scales": [1, 2, 4],
        "quantizer": "vq",
        "quantizer_kwargs": {"codebook_size": 16},
    }
    return VQGANModel(
        block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4, latent_channels=4, embed_dim=4,
        mid_block_add_attention=False, quantizer=quantizer,
    ).eval()  # fmt: skip


@pytest.mark.parametrize(
    "tokenizer, level_shapes",
    [
        (lambda: tiny_vqgan_tokenizer(scales=(4,)), ((4, 4),)),  # single-level VQGAN
        (lambda: tiny_vqgan_tokenizer(), ((1, 1), (2, 2), (4, 4))),  # multi-level VQGAN
        (lambda: TinyMultiScaleTokenizer().eval(), ((1, 1), (2, 2), (4, 4))),  # any object with the interface
        (lambda: _library_multiscale_vqgan(), ((1, 1), (2, 2), (4, 4))),  # the library's multiscale quantizer
    ],
)
def test_other_tokenizers(tokenizer, level_shapes):
    tok = tokenizer()
    pipe = tiny_pipeline(tokenizer=tok, level_shapes=level_shapes)
    out = pipe(class_labels=[0, 1], generator=_gen(), output_type="pt")
    n = sum(h * w for h, w in level_shapes)
    assert out.tokens.shape == (2, n) and out.images.shape == (2, 3, 32, 32)
    torch.testing.assert_close(
        out.images, (tok.decode(unflatten_indices(out.tokens, list(level_shapes))).clamp(-1, 1) + 1) / 2
    )


def test_mismatched_tokenizer_and_prior():
    pipe = CodaMaskGitPipeline(tiny_vqgan_tokenizer(), tiny_prior(((1, 1), (4, 4))), MaskGitScheduler())
    with pytest.raises(ValueError, match="level_shapes"):
        pipe(class_labels=[0])
    pipe = CodaMaskGitPipeline(tiny_vqgan_tokenizer(codebook_size=32), tiny_prior(), MaskGitScheduler())
    with pytest.raises(ValueError, match="codebook_size"):
        pipe(class_labels=[0])


def test_save_load_round_trip(tmp_path):
    pipe = tiny_pipeline()
    pipe.scheduler = MaskGitScheduler(mask_schedule="linear", choice_temperature=3.0)
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "CodaMaskGitPipeline"
    assert index["transformer"] == ["coda_hf.maskgit.modeling_maskgit", "MaskGitTransformer"]
    assert index["scheduler"] == ["coda_hf.maskgit.scheduler", "MaskGitScheduler"]
    assert index["tokenizer"] == ["coda_hf.models.coda_vq", "CodaVQModel"]
    assert (tmp_path / "transformer" / "model.safetensors").is_file()
    assert (tmp_path / "scheduler" / "scheduler_config.json").is_file()

    loaded = CodaMaskGitPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.transformer, MaskGitTransformer) and isinstance(
        loaded.scheduler, MaskGitScheduler
    )
    assert (
        loaded.scheduler.config.mask_schedule == "linear"
        and loaded.scheduler.config.choice_temperature == 3.0
    )
    for name in ("transformer", "tokenizer"):
        ref, got = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    a = pipe(class_labels=[0, 1], generator=_gen(5), output_type="pt", guidance_scale=1.5)
    b = loaded(class_labels=[0, 1], generator=_gen(5), output_type="pt", guidance_scale=1.5)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.images, b.images)
