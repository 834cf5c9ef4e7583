"""VQGANModel: tiny forward / encode / decode / save-load round trip, with any registered quantizer."""

import pytest
import torch
import torch.nn.functional as F
from _helpers_vqgan import TEST_QUANTIZER
from skimage.data import astronaut, chelsea

from coda_hf.models import CodaEncoderOutput, CodaVQOutput
from coda_hf.models.vqgan import VQGANModel
from coda_hf.quantizers import QUANTIZER_REGISTRY

QUANTIZERS = [
    {"name": TEST_QUANTIZER, "codebook_size": 16},
    {"name": "vq", "codebook_size": 16},
    {"name": "vq", "codebook_size": 16, "use_ema": True},
    {"name": "fsq", "levels": [4, 4]},
    {"name": "lfq", "codebook_size": 16},
    {"name": "gumbel", "codebook_size": 16},
    {"name": "attention", "codebook_size": 16},
    {"name": "residual", "num_levels": 2, "quantizer": "vq", "quantizer_kwargs": {"codebook_size": 16}},
    {"name": "multiscale", "scales": [1, 2, 4, 16], "quantizer_kwargs": {"codebook_size": 16}},
]


def _tiny(quantizer):
    if quantizer["name"] not in QUANTIZER_REGISTRY:
        pytest.skip(f"quantizer {quantizer['name']!r} is not registered yet")
    return VQGANModel(
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, latent_channels=8, embed_dim=4,
        quantizer=quantizer,
    )  # fmt: skip


@pytest.fixture(params=QUANTIZERS, ids=lambda q: "-".join(str(v) for v in q.values()))
def model(request):
    return _tiny(request.param).eval()


def test_geometry(model):
    assert model.downsample_factor == 2
    assert model.codebook_size == 16
    assert model.level_shapes(32, 32) == model.quantizer.level_shapes(16, 16)
    assert model.level_shapes(32, 32)[-1] == (16, 16)
    assert model.num_tokens(32, 32) == sum(h * w for h, w in model.level_shapes(32, 32))
    assert model.get_last_layer() is model.decoder.conv_out.weight
    with pytest.raises(ValueError, match="multiple of the downsample factor"):
        model.level_shapes(31, 32)


def test_forward_shapes_losses_and_gradients(model):
    model.train()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = model(x)
    assert isinstance(out, CodaVQOutput)  # the same output type as CodaVQModel
    assert out.latents.shape == (2, 4, 16, 16)
    assert out.sample.shape == x.shape
    assert [tuple(i.shape) for i in out.indices] == [(2, h, w) for h, w in model.level_shapes(32, 32)]
    assert out.quantized.shape == (2, 4, 16, 16)
    assert all(v.ndim == 0 for v in out.losses.values())  # (FSQ has none)
    ((out.sample - x).pow(2).mean() + out.loss).backward()
    assert model.encoder.conv_in.weight.grad is not None  # straight-through reaches the encoder
    assert model.get_last_layer().grad is not None


def test_encode_decode_consistent(model):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        enc = model.encode(x)
        assert isinstance(enc, CodaEncoderOutput)
        assert enc.token_ids.shape == (2, model.num_tokens(32, 32))
        assert enc.latents.shape == enc.quantized.shape == (2, 4, 16, 16)
        assert int(enc.token_ids.max()) < 16
        from_list = model.decode(enc.indices)
        from_ids = model.decode(enc.token_ids)  # square latent size inferred
        from_ids_sized = model.decode(enc.token_ids, latent_size=(16, 16))
        recon = model(x).sample
    assert from_list.shape == x.shape
    assert torch.allclose(from_list, from_ids) and torch.allclose(from_list, from_ids_sized)
    # eval: decode(encode(x)) == forward(x), clamped to [-1, 1] like every tokenizer's decode
    assert torch.allclose(from_list, recon.clamp(-1, 1), atol=1e-5)


def test_decode_validates_indices(model):
    bad = [torch.zeros(1, h, w, dtype=torch.long) for h, w in model.level_shapes(32, 32)]
    bad[-1][0, 0, 0] = 16
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        model.decode(bad)
    with pytest.raises(ValueError, match="token ids must be"):
        model.decode(torch.zeros(1, 2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="square latent size"):
        model.decode(torch.zeros(1, model.num_tokens(32, 32) - 1, dtype=torch.long))
    with pytest.raises(ValueError, match="images"):
        model.encode(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="float"):
        model.encode(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="latents must be"):
        model.decode_latents(torch.zeros(1, 5, 16, 16))


def test_save_load_round_trip_identical_tokens(model, tmp_path):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    model.save_pretrained(tmp_path / "vqgan")
    assert (tmp_path / "vqgan" / "diffusion_pytorch_model.safetensors").exists()
    loaded = VQGANModel.from_pretrained(tmp_path / "vqgan").eval()
    assert loaded.config.quantizer == model.config.quantizer
    assert loaded.config.quantizer["dim"] == 4  # filled in from embed_dim and saved
    with torch.no_grad():
        assert torch.equal(model.encode(x).token_ids, loaded.encode(x).token_ids)
        assert torch.allclose(model(x).sample, loaded(x).sample)


def test_default_quantizer_is_vq_1024():
    m = VQGANModel(block_out_channels=(8,), layers_per_block=1, norm_num_groups=4, latent_channels=8, embed_dim=4)
    assert m.config.quantizer["name"] == "vq" and m.codebook_size == 1024 and m.downsample_factor == 1


def test_config_is_json_safe_and_validated():
    m = _tiny({"name": TEST_QUANTIZER, "codebook_size": 8, "beta": 0.5})
    assert m.config.quantizer == {"name": TEST_QUANTIZER, "dim": 4, "codebook_size": 8, "beta": 0.5}
    assert "quantizer" in m.to_json_string()
    with pytest.raises(ValueError, match="name"):
        VQGANModel(block_out_channels=(8,), norm_num_groups=4, quantizer={"codebook_size": 8})
    with pytest.raises(ValueError, match="unknown quantizer"):
        VQGANModel(block_out_channels=(8,), norm_num_groups=4, quantizer={"name": "nope"})
    with pytest.raises(ValueError, match="must equal embed_dim"):
        VQGANModel(
            block_out_channels=(8,),
            norm_num_groups=4,
            embed_dim=4,
            quantizer={"name": TEST_QUANTIZER, "dim": 3},
        )
    with pytest.raises(ValueError, match="norm_num_groups"):
        VQGANModel(block_out_channels=(8, 12), norm_num_groups=8)


def test_short_training_with_reconstruction_loss_reduces_error():
    """Generator and discriminator steps alternate as a training loop would; the error falls."""
    from coda_hf.discriminators import build_discriminator
    from coda_hf.losses import ReconstructionLoss

    model = _tiny({"name": TEST_QUANTIZER, "codebook_size": 16}).train()
    loss_fn = ReconstructionLoss(perceptual_weight=0.0, gan_weight=0.1, disc_start=5)
    disc = build_discriminator("patchgan", ndf=8, n_layers=2, norm="group", num_groups=4)
    opt_g = torch.optim.Adam(model.parameters(), lr=5e-3)
    opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4)
    # Two real photos at 32 px (random noise is incompressible with 16 codes).
    photos = [
        torch.from_numpy(a).permute(2, 0, 1).float().div(127.5).sub(1)[None] for a in (chelsea(), astronaut())
    ]
    x = torch.cat([F.interpolate(p, size=(32, 32), mode="area") for p in photos])
    with torch.no_grad():
        start = (model(x).sample - x).pow(2).mean().item()
    for step in range(30):
        out = model(x)
        g = loss_fn.generator_loss(
            x, out.sample, step=step, last_layer=model.get_last_layer(), quantizer_losses=out.losses,
            discriminator=disc,
        )
        opt_g.zero_grad()
        g.total.backward()
        opt_g.step()
        d = loss_fn.discriminator_loss(x, out.sample, step=step, discriminator=disc)
        opt_d.zero_grad()
        d.total.backward()
        opt_d.step()
        assert (g.disc_factor == 1.0) == (step >= 5)
    with torch.no_grad():
        end = (model(x).sample - x).pow(2).mean().item()
    assert end < 0.5 * start, (start, end)


def test_quantizer_attribute_is_the_module_not_the_config(recwarn):
    from coda_hf.quantizers import BaseQuantizer, build_quantizer

    m = _tiny({"name": TEST_QUANTIZER, "codebook_size": 16})
    assert isinstance(m.quantizer, BaseQuantizer)
    assert isinstance(m.config.quantizer, dict)
    assert not [w for w in recwarn if "quantizer" in str(w.message)]
    # Swapping the quantizer (a trainer's --reinit_codebook) keeps it a submodule with state-dict keys.
    new = build_quantizer(TEST_QUANTIZER, dim=4, codebook_size=16)
    m.quantizer = new
    m.register_to_config(quantizer=new.to_dict())
    assert m.quantizer is new
    assert any(k.startswith("quantizer.") for k in m.state_dict())


def test_min_image_size_and_pixel_value_checks():
    """The minimum size follows the GroupNorms (one value per group at a 1x1 latent breaks them); pixel
    values are checked on every encode path (forward included); clip=True clamps with a warning."""
    kwargs = dict(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, embed_dim=4,
                  quantizer={"name": "vq", "codebook_size": 8})  # fmt: skip
    two_per_group, one_per_group = VQGANModel(norm_num_groups=4, **kwargs).eval(), VQGANModel(norm_num_groups=8, **kwargs).eval()
    assert (two_per_group.min_image_size, one_per_group.min_image_size) == (2, 4)
    with torch.no_grad():
        assert two_per_group.encode(torch.zeros(1, 3, 2, 2)).token_ids.shape == (1, 1)  # a 1x1 latent works
        with pytest.raises(ValueError, match="at least 4 x 4 pixels"):
            one_per_group.encode(torch.zeros(1, 3, 2, 4))
        with pytest.raises(ValueError, match=r"got values in \[0, 255\]"):
            two_per_group(torch.linspace(0, 255, 48).view(1, 3, 4, 4))
        with pytest.raises(ValueError, match="non-finite"):
            two_per_group.encode(torch.full((1, 3, 4, 4), float("inf")))
        with pytest.raises(ValueError, match="at least one image"):
            two_per_group.encode(torch.zeros(0, 3, 4, 4))
        x = torch.linspace(-1.5, 1.5, 48).view(1, 3, 4, 4)
        with pytest.warns(UserWarning, match="clipped"):
            clipped = two_per_group.encode(x, clip=True)
        assert torch.equal(clipped.token_ids, two_per_group.encode(x.clamp(-1, 1)).token_ids)
        two_per_group.encode(torch.full((1, 3, 4, 4), 1.0005))  # within the tolerance of 8-bit rounding
