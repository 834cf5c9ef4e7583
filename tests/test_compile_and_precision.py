"""torch.compile of the quantizer and the tokenizer, and encoding under bf16 / fp16 autocast."""

from __future__ import annotations

import pytest
import torch
from _helpers_coda import images, tiny_coda

from coda_hf.quantizers import build_quantizer


def _multiscale(**attention_kwargs):
    torch.manual_seed(0)
    return build_quantizer("multiscale", dim=4, scales=[1, 2, 4], quantizer="attention",
                           quantizer_kwargs={"codebook_size": 128, **attention_kwargs})  # fmt: skip


def _run(module, z, train: bool):
    """Output and input gradient of one call (train: losses + a weighted output, backward)."""
    module.train(train)
    x = z.clone().requires_grad_(train)
    with torch.set_grad_enabled(train):
        out = module(x)
        if train:
            (out.quantized.pow(2).sum() + out.loss).backward()
    return out, x.grad


@pytest.mark.slow
@pytest.mark.parametrize("fused_threshold", [None, 0], ids=["reference", "fused"])
def test_quantizer_compiles_without_graph_breaks(fused_threshold):
    """fullgraph=True fails on any graph break; the fused kernel is one opaque custom operator."""
    z = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    for train in (False, True):
        eager = _multiscale(fused_threshold=fused_threshold)
        compiled_module = _multiscale(fused_threshold=fused_threshold)
        compiled = torch.compile(compiled_module, fullgraph=True, backend="aot_eager")
        (ref, ref_grad), (got, got_grad) = _run(eager, z, train), _run(compiled, z, train)
        assert all(torch.equal(a, b) for a, b in zip(ref.indices, got.indices))
        torch.testing.assert_close(got.quantized, ref.quantized)
        for name in ref.losses:
            torch.testing.assert_close(got.losses[name], ref.losses[name])
        if train:
            torch.testing.assert_close(got_grad, ref_grad)
            for (name, p), q in zip(eager.named_parameters(), compiled_module.parameters()):
                torch.testing.assert_close(q.grad, p.grad, msg=name)


@pytest.mark.slow
def test_tokenizer_encode_decode_and_training_step_compile():
    model, x = tiny_coda(), images(2, 32)
    with torch.no_grad():  # inference: dynamo capture only (backend "eager"); the training step below adds AOT autograd
        expected = model.encode(x)
        expected_images = model.decode(expected.indices)
        encoded = torch.compile(model.encode, backend="eager")(x)
        decoded = torch.compile(model.decode, backend="eager")(encoded.indices)
    assert torch.equal(encoded.token_ids, expected.token_ids)
    torch.testing.assert_close(decoded, expected_images)

    def step(module, batch):
        out = module(batch)
        loss = (out.sample - batch).abs().mean() + out.loss
        loss.backward()
        return loss.detach()

    losses, grads = [], []
    for fn in (step, torch.compile(step, backend="aot_eager")):
        trained = tiny_coda().train()
        torch.manual_seed(3)  # the posterior sample
        losses.append(fn(trained, x))
        grads.append([p.grad for p in trained.parameters() if p.requires_grad])
    torch.testing.assert_close(losses[1], losses[0])
    for a, b in zip(grads[0], grads[1]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_keeps_the_codebook_search_in_float32(dtype):
    """Under autocast the quantizer sees the same (half-precision) latents as a float32 run and returns the
    same ids; a search done in half precision flips some of them (why it is kept in float32)."""
    quantizer = build_quantizer("multiscale", dim=8, scales=[1, 2, 4, 8], quantizer="attention",
                                quantizer_kwargs={"codebook_size": 1024}).eval()  # fmt: skip
    z = torch.randn(4, 8, 16, 16, generator=torch.Generator().manual_seed(0)).to(dtype)
    with torch.no_grad():
        expected = quantizer(z.float())
        with torch.autocast("cpu", dtype=dtype):
            got = quantizer(z)
            inner = quantizer.quantizers[0]
            f = z.permute(0, 2, 3, 1).reshape(-1, 8)
            half_search = (inner.queries(f) @ inner.keys().t()).argmax(-1)  # what autocast alone would do
    assert all(torch.equal(a, b) for a, b in zip(expected.indices, got.indices))
    assert got.quantized.dtype == torch.float32 and torch.equal(got.quantized, expected.quantized)
    assert (half_search != inner.search(f.float())["indices"]).any()


def test_autocast_tokenizer_encode_is_deterministic_given_its_latents():
    """encode under bf16 autocast: the quantizer part equals quantizing the same latents in float32."""
    model, x = tiny_coda(), images(2, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        enc = model.encode(x)
    with torch.no_grad():
        again = model.quantize(enc.latents.float(), with_losses=False)
    assert all(torch.equal(a, b) for a, b in zip(enc.indices, again.indices))
