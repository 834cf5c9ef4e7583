"""The training-free per-channel quantile quantizer (TokenBridge-style): statistics, exact decoding, rate."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch

from coda_hf.quantizers import QuantileQuantizer, build_quantizer
from coda_hf.quantizers.quantile import gaussian_bins


def channel_data(n: int = 4000, seed: int = 0) -> torch.Tensor:
    """``(n, 3, 1, 1)`` latents: a uniform, an exponential and a shifted Gaussian channel (not one shape)."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.rand(n, generator=g) * 4 - 1, -torch.log(torch.rand(n, generator=g)),
                        torch.randn(n, generator=g) * 0.5 + 2], dim=1)[:, :, None, None]  # fmt: skip


def test_empirical_bins_are_the_channel_quantiles_and_decode_to_the_bin_means():
    z = channel_data()
    q = QuantileQuantizer(dim=3, bins=4)
    q.initialize(z)
    values = z[:, :, 0, 0].double().numpy()  # (N, C)
    for c in range(3):
        expected = np.quantile(values[:, c], [0.25, 0.5, 0.75])  # numpy's linear interpolation
        np.testing.assert_allclose(q.boundaries[c].numpy(), expected, rtol=1e-6)
        bins = np.searchsorted(expected, values[:, c], side="left")  # bin k holds (b_k-1, b_k]
        means = [values[bins == k, c].mean() for k in range(4)]
        np.testing.assert_allclose(q.values[c].numpy(), means, rtol=1e-5)
    q.eval()
    out = q(z)
    shares = torch.stack([torch.bincount(i.reshape(-1), minlength=4) for i in out.indices]).float() / z.shape[0]
    assert torch.allclose(shares, torch.full_like(shares, 0.25), atol=1e-3)  # equal shares on the data
    assert bool(q.data_initialized) and not q.needs_data_init


def test_gaussian_bins_are_tokenbridges_scaled_per_channel():
    z = channel_data()
    q = QuantileQuantizer(dim=3, bins=4, distribution="gaussian")
    q.initialize(z)
    unit = NormalDist()
    for c in range(3):
        x = z[:, c].double()
        mean, std = float(x.mean()), float(x.std())
        edges = [unit.inv_cdf(k / 4) for k in (1, 2, 3)]
        np.testing.assert_allclose(q.boundaries[c].numpy(), [mean + std * e for e in edges], rtol=1e-5, atol=1e-6)
        pdf = [0.0, *(unit.pdf(e) for e in edges), 0.0]
        truncated = [(pdf[k] - pdf[k + 1]) * 4 for k in range(4)]  # E[Z | bin], each bin of mass 1/4
        np.testing.assert_allclose(q.values[c].numpy(), [mean + std * t for t in truncated], rtol=1e-5, atol=1e-6)


def test_before_initialisation_the_bins_are_a_standard_normals():
    q = QuantileQuantizer(dim=2, bins=4).eval()
    boundaries, values = gaussian_bins(4)
    assert q.needs_data_init
    assert torch.allclose(q.boundaries, boundaries.float().expand(2, -1)) and torch.allclose(q.values, values.float().expand(2, -1))
    # the error of 4 equal-mass bins with conditional means on N(0, 1): 1 - sum(values^2) / 4
    z = torch.randn(100000, 2, 1, 1, generator=torch.Generator().manual_seed(0))
    error = float((q(z).quantized - z).pow(2).mean())
    assert error == pytest.approx(1 - float(values.pow(2).mean()), abs=3e-3)


def test_lloyd_max_refinement_lowers_the_error_towards_the_optimal_scalar_quantizer():
    z = torch.randn(200000, 1, 1, 1, generator=torch.Generator().manual_seed(1))
    errors = {}
    for iters in (0, 30):
        q = QuantileQuantizer(dim=1, bins=4, refine_iters=iters)
        q.initialize(z)
        errors[iters] = float((q.eval()(z).quantized - z).pow(2).mean())
    assert errors[0] == pytest.approx(0.1405, abs=3e-3)  # equal-mass bins of N(0, 1)
    assert errors[30] == pytest.approx(0.1175, abs=3e-3)  # Lloyd-Max's 4-level quantizer of N(0, 1)


def test_training_forward_measures_then_decoding_is_exact_and_saved_with_the_model():
    torch.manual_seed(0)
    q = build_quantizer("quantile", dim=4, bins=3)
    z = torch.randn(6, 4, 5, 7) * torch.tensor([1.0, 2.0, 0.5, 3.0])[None, :, None, None]
    q.train()(z.requires_grad_(True))  # the first training batch sets the bins
    assert not q.needs_data_init
    q.eval()
    with torch.no_grad():
        out = q(z)
    assert len(out.indices) == 4 and all(tuple(i.shape) == (6, 5, 7) for i in out.indices)  # one level per channel
    assert torch.equal(q.indices_to_codes(out.indices), out.quantized)
    assert torch.equal(q.decode_indices(out.token_ids, latent_size=(5, 7)), out.quantized)
    assert q.num_tokens(5, 7) == 4 * 5 * 7 and out.stats["quant_error"].shape == (4,)
    fresh = build_quantizer("quantile", dim=4, bins=3)
    fresh.load_state_dict(q.state_dict())
    assert not fresh.needs_data_init and torch.equal(fresh.eval()(z).quantized, out.quantized)


def test_bits_per_pixel_of_a_tokenizer_with_the_quantile_quantizer():
    """16 channels of a 16 x 16 latent at 4 bins on a 64 px tile: 16 x 256 x 2 bits / 4096 px = 2.0 bpp."""
    from _helpers_training import TINY_VAE
    from diffusers import AutoencoderKL

    from coda_hf.metrics import evaluate_tokenizer
    from coda_hf.models import CodaVQModel

    torch.manual_seed(0)
    model = CodaVQModel.from_vae(AutoencoderKL(**TINY_VAE), quantizer={"name": "quantile", "bins": 4}, lora={"rank": 0})
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    model.quantizer.initialize(model.eval().encode_latents(images))
    m = evaluate_tokenizer(model, [images], feature_extractors={}, progress=False)
    channels, side = TINY_VAE["latent_channels"], 32 // 2
    assert m["tokens_per_image"] == channels * side * side and m["codebook_size"] == 4
    assert m["bits_per_pixel"] == pytest.approx(channels * side * side * math.log2(4) / (32 * 32))


def test_bad_options_and_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="bins >= 2"):
        QuantileQuantizer(dim=2, bins=1)
    with pytest.raises(ValueError, match="distribution must be one of"):
        QuantileQuantizer(dim=2, distribution="laplace")
    q = QuantileQuantizer(dim=2, bins=8)
    with pytest.raises(ValueError, match="cannot set 8 bins"):
        q.initialize(torch.randn(1, 2, 2, 2))
    with pytest.raises(ValueError, match="2 levels of indices"):
        q.indices_to_codes([torch.zeros(1, 2, 2, dtype=torch.long)])
