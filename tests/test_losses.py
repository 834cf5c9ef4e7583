"""Loss functions against hand-computed values, LPIPS architecture/loading, the perceptual
distance on real photos, and the composite tokenizer loss."""

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from skimage import data

from coda_hf.losses import (
    LPIPS,
    DiscriminatorLossOutput,
    GeneratorLossOutput,
    PerceptualLoss,
    ReconstructionLoss,
    TokenizerLoss,
    adaptive_generator_weight,
    discriminator_loss,
    generator_loss,
    hinge_d_loss,
    hinge_g_loss,
    kl_divergence,
    kl_loss,
    l1_loss,
    l2_loss,
    make_vgg16_features,
    non_saturating_d_loss,
    non_saturating_g_loss,
    normalize_channels,
    warmup_factor,
)

# ----------------------------------------------------------------------------- pixel


def test_l1_l2_hand_computed():
    x = torch.tensor([[[[0.0, 1.0], [2.0, -1.0]]]])  # (1, 1, 2, 2)
    y = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    # |diff| = 1, 0, 2, 1 -> mean 1.0 ; diff^2 = 1, 0, 4, 1 -> mean 1.5
    assert l1_loss(x, y).item() == pytest.approx(1.0)
    assert l2_loss(x, y).item() == pytest.approx(1.5)


def test_pixel_reduction_none_per_image():
    x = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2) * 3])
    y = torch.zeros(2, 1, 2, 2)
    assert torch.allclose(l1_loss(x, y, reduction="none"), torch.tensor([0.0, 3.0]))
    assert torch.allclose(l2_loss(x, y, reduction="none"), torch.tensor([0.0, 9.0]))


def test_pixel_bad_input():
    with pytest.raises(ValueError, match="differ in shape"):
        l1_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match="reduction"):
        l2_loss(torch.zeros(1, 3), torch.zeros(1, 3), reduction="sum")


# ----------------------------------------------------------------------------- GAN


def test_hinge_losses_hand_computed():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - r) = 0, 0.5, 2 -> mean 2.5/3
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + f) = 0, 1, 2 -> mean 1
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (2.5 / 3 + 1.0))
    assert hinge_g_loss(fake).item() == pytest.approx(1.0 / 3)  # -mean(f) = -(-1/3)


def test_non_saturating_losses_hand_computed():
    real = torch.tensor([0.0, 1.0])
    fake = torch.tensor([0.0, -1.0])
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    expected_d = 0.5 * ((sp(0.0) + sp(-1.0)) / 2 + (sp(0.0) + sp(-1.0)) / 2)
    assert non_saturating_d_loss(real, fake).item() == pytest.approx(expected_d, rel=1e-6)
    # -log sigmoid(f) = softplus(-f): (log 2 + softplus(1)) / 2
    assert non_saturating_g_loss(fake).item() == pytest.approx((sp(0.0) + sp(1.0)) / 2, rel=1e-6)


def test_gan_dispatch_and_bad_kind():
    r, f = torch.randn(4, 1, 3, 3), torch.randn(4, 1, 3, 3)
    assert discriminator_loss(r, f, "hinge") == hinge_d_loss(r, f)
    assert discriminator_loss(r, f, "non_saturating") == non_saturating_d_loss(r, f)
    assert generator_loss(f, "hinge") == hinge_g_loss(f)
    assert generator_loss(f, "non_saturating") == non_saturating_g_loss(f)
    with pytest.raises(ValueError, match="gan loss"):
        generator_loss(f, "wasserstein")


def test_warmup_factor():
    assert warmup_factor(0, 10) == 0.0
    assert warmup_factor(9, 10) == 0.0
    assert warmup_factor(10, 10) == 1.0
    assert warmup_factor(50, 10, value=0.5) == 0.5
    assert warmup_factor(0, 0) == 1.0


def test_adaptive_weight_toy_graph():
    # last layer w (2,); nll = 3 * sum(w) -> grad (3, 3), norm 3*sqrt(2);
    # g = sum(w^2) -> grad 2w = (2, 4) at w = (1, 2), norm sqrt(20).
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    nll = 3 * w.sum()
    g = (w**2).sum()
    lam = adaptive_generator_weight(nll, g, w, disc_weight=0.5, eps=0.0)
    assert lam.item() == pytest.approx(0.5 * 3 * math.sqrt(2) / math.sqrt(20), rel=1e-6)
    assert not lam.requires_grad
    # Clamp: a tiny generator gradient hits max_weight.
    w2 = torch.tensor([1.0], requires_grad=True)
    lam2 = adaptive_generator_weight(10 * w2.sum(), 1e-9 * w2.sum(), w2, max_weight=7.0)
    assert lam2.item() == pytest.approx(7.0)
    with pytest.raises(ValueError, match="last_layer"):
        adaptive_generator_weight(nll, g, torch.ones(2))


# ----------------------------------------------------------------------------- KL


def test_kl_matches_closed_form():
    mean = torch.tensor([0.5, -1.0]).view(1, 2, 1, 1)
    logvar = torch.tensor([0.0, math.log(4.0)]).view(1, 2, 1, 1)
    # 0.5 * sum(mu^2 + var - 1 - logvar) = 0.5 * ((0.25 + 1 - 1 - 0) + (1 + 4 - 1 - log 4))
    expected = 0.5 * (0.25 + 4 - math.log(4.0))
    assert kl_divergence(mean=mean, logvar=logvar).item() == pytest.approx(expected, rel=1e-6)
    assert kl_loss(mean=mean, logvar=logvar, beta=0.1).item() == pytest.approx(0.1 * expected, rel=1e-6)
    # Standard normal posterior: zero KL.
    assert kl_divergence(mean=torch.zeros(2, 3, 2, 2), logvar=torch.zeros(2, 3, 2, 2)).abs().max() < 1e-7


def test_kl_accepts_diffusers_posterior_and_validates():
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    params = torch.randn(2, 8, 3, 3)
    post = DiagonalGaussianDistribution(params)
    mean, logvar = params.chunk(2, dim=1)
    assert torch.allclose(kl_divergence(post), kl_divergence(mean=mean, logvar=logvar))
    with pytest.raises(ValueError, match="posterior or both"):
        kl_divergence(mean=mean)
    with pytest.raises(ValueError, match="beta"):
        kl_loss(post, beta=-1.0)


# ----------------------------------------------------------------------------- LPIPS


def test_vgg16_features_layer_layout_matches_torchvision():
    feats = make_vgg16_features()
    assert len(feats) == 31
    convs = {
        i: (m.in_channels, m.out_channels) for i, m in enumerate(feats) if isinstance(m, torch.nn.Conv2d)
    }
    # torchvision vgg16().features conv indices and channels
    assert convs == {
        0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256),
        14: (256, 256), 17: (256, 512), 19: (512, 512), 21: (512, 512), 24: (512, 512),
        26: (512, 512), 28: (512, 512),
    }  # fmt: skip
    assert [i for i, m in enumerate(feats) if isinstance(m, torch.nn.MaxPool2d)] == [4, 9, 16, 23, 30]


def test_lpips_names_shapes_and_output():
    lp = LPIPS()
    keys = set(lp.state_dict())
    assert "vgg.features.28.weight" in keys and "lin4.model.1.weight" in keys
    assert lp.lin0.model[1].weight.shape == (1, 64, 1, 1)
    assert lp.lin3.model[1].weight.shape == (1, 512, 1, 1)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    feats = lp.features(x)
    assert [f.shape[1:] for f in feats] == [
        (64, 32, 32),
        (128, 16, 16),
        (256, 8, 8),
        (512, 4, 4),
        (512, 2, 2),
    ]
    d = lp(x, x.flip(-1))
    assert d.shape == (2,)
    assert torch.allclose(lp(x, x), torch.zeros(2))
    assert not any(p.requires_grad for p in lp.parameters())


def test_normalize_channels_unit_norm_and_finite_gradient_at_zero():
    x = torch.randn(2, 5, 3, 3)
    x[0, :, 1, 1] = 0.0  # an all-zero feature vector
    x.requires_grad_(True)
    n = normalize_channels(x)
    norms = n.detach().pow(2).sum(dim=1).sqrt()
    assert torch.allclose(norms[1], torch.ones(3, 3), atol=1e-5) and norms[0, 1, 1] == 0
    n.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_lpips_loads_torchvision_and_lpips_named_safetensors(tmp_path):
    src = LPIPS()
    # torchvision naming for the trunk, lpips naming for the heads, lpips-package slice naming mixed in.
    state = {}
    for k, v in src.state_dict().items():
        if k.startswith("vgg.features."):
            idx = int(k.split(".")[2])
            state[f"net.slice1.{idx}.{k.split('.')[-1]}" if idx < 4 else k[len("vgg.") :]] = v.clone()
        else:
            state[k] = v.clone()
    path = tmp_path / "lpips.safetensors"
    save_file(state, str(path))
    torch.manual_seed(123)
    loaded = LPIPS(weights=str(path))
    for k, v in src.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(loaded(x, y), src(x, y))


def test_lpips_load_errors(tmp_path):
    partial = tmp_path / "heads.safetensors"
    save_file({"lin0.model.1.weight": torch.ones(1, 64, 1, 1)}, str(partial))
    with pytest.raises(ValueError, match="miss"):
        LPIPS(weights=str(partial))
    lp = LPIPS(weights=str(partial), strict=False)
    assert torch.equal(lp.lin0.model[1].weight, torch.ones(1, 64, 1, 1))
    empty = tmp_path / "other.safetensors"
    save_file({"foo": torch.ones(1)}, str(empty))
    with pytest.raises(ValueError, match="no VGG16"):
        LPIPS(weights=str(empty))
    with pytest.raises(FileNotFoundError):
        LPIPS(weights=str(tmp_path / "missing" / "x.safetensors"))
    wrong = tmp_path / "weights.npz"
    wrong.write_bytes(b"0")
    with pytest.raises(ValueError, match="safetensors"):
        LPIPS(weights=str(wrong))


def test_lpips_loads_lpips_package_heads_pth_then_trunk(tmp_path):
    # The lpips package ships heads only (vgg.pth: lin0.model.1.weight ...): load them, then a trunk.
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(heads, tmp_path / "vgg.pth")
    lp = LPIPS(weights=str(tmp_path / "vgg.pth"), strict=False)
    assert torch.equal(lp.lin2.model[1].weight, heads["lin2.model.1.weight"])
    trunk = {k.replace("vgg.", ""): v for k, v in LPIPS().state_dict().items() if k.startswith("vgg.")}
    save_file(trunk, str(tmp_path / "vgg16.safetensors"))
    lp.load_weights(str(tmp_path / "vgg16.safetensors"), strict=False)
    assert torch.equal(lp.vgg.features[0].weight, trunk["features.0.weight"])


def test_perceptual_loss_lpips_backend_reduction():
    loss = PerceptualLoss(backend="lpips", reduction="none")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert loss(x, x.flip(-2)).shape == (2,)
    assert PerceptualLoss(backend="lpips")(x, x.flip(-2)).ndim == 0


# ----------------------------------------------------------------------------- EfficientNet perceptual


def _photos(size=64):
    imgs = [
        torch.from_numpy(a).permute(2, 0, 1).float().div(127.5).sub(1)[None]
        for a in (data.chelsea(), data.astronaut())
    ]
    return torch.cat([F.interpolate(im, size=(size, size), mode="area") for im in imgs])  # (2, 3, S, S)


@pytest.fixture(scope="module")
def effnet_loss():
    return PerceptualLoss(backend="efficientnet", reduction="none")


def test_efficientnet_perceptual_zero_for_identical(effnet_loss):
    x = _photos()
    assert torch.allclose(effnet_loss(x, x), torch.zeros(2), atol=1e-6)


def test_efficientnet_perceptual_monotone_in_noise_and_blur(effnet_loss):
    x = _photos()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    noisy = [effnet_loss(x, (x + s * noise).clamp(-1, 1)) for s in (0.05, 0.1, 0.2, 0.4)]
    blurred = [effnet_loss(x, F.avg_pool2d(x, k, 1, k // 2, count_include_pad=False)) for k in (3, 5, 9)]
    for seq in (noisy, blurred):
        for a, b in zip(seq, seq[1:]):
            assert (b > a).all(), (a, b)


def test_efficientnet_perceptual_gradients_and_validation(effnet_loss):
    x = _photos(32)
    y = x.clone().mul(0.8).requires_grad_(True)
    effnet_loss(y, x).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="backend"):
        PerceptualLoss(backend="vgg")
    with pytest.raises(ValueError, match="layers"):
        PerceptualLoss(layers=(7,), pretrained=False)
    with pytest.raises(ValueError, match="equal shape"):
        effnet_loss(x, x[:, :, :16])


def test_efficientnet_perceptual_layers_and_resize():
    x = _photos(32)
    y = x.flip(-1)
    one = PerceptualLoss(layers=(2,), reduction="none")(x, y)
    resized = PerceptualLoss(layers=(2,), resize_to=64, reduction="none")(x, y)
    assert one.shape == resized.shape == (2,)
    assert not torch.allclose(one, resized)


# ----------------------------------------------------------------------------- composite


def _tiny_disc():
    from coda_hf.discriminators import build_discriminator

    return build_discriminator("patchgan", ndf=8, n_layers=2, norm="group", num_groups=4)


def _tiny_loss(**kw):
    """A loss whose generator_loss / discriminator_loss pass a tiny PatchGAN (``loss.disc``)."""
    loss = ReconstructionLoss(**{"perceptual_pretrained": False, **kw})
    disc = _tiny_disc()
    loss.disc = disc
    loss.generator_loss = functools.partial(loss.generator_loss, discriminator=disc)
    loss.discriminator_loss = functools.partial(loss.discriminator_loss, discriminator=disc)
    return loss


class _ToyDecoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_out = torch.nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, z):
        return self.conv_out(z)


def test_composite_defaults_follow_coda_facts():
    loss = ReconstructionLoss(perceptual_pretrained=False)
    c = loss.config
    assert (c["l1_weight"], c["l2_weight"], c["perceptual_weight"], c["gan_weight"]) == (0.2, 1.0, 1.0, 1.0)
    assert c["gan_loss"] == "hinge" and c["adaptive_weight"] is True
    assert TokenizerLoss is ReconstructionLoss
    # The loss builds no discriminator: the caller's is passed in (the training loop passes its DDP-wrapped
    # one to the discriminator step), and a GAN loss without one is a clear error.
    assert loss.discriminator is None and not list(loss.parameters(recurse=False))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with pytest.raises(ValueError, match="needs a discriminator"):
        loss.discriminator_loss(x, x)


def test_deprecated_discriminator_name_still_builds_one():
    with pytest.warns(FutureWarning, match="build_discriminator"):
        loss = ReconstructionLoss(perceptual_pretrained=False, discriminator="patchgan",
                                  discriminator_kwargs={"ndf": 8, "n_layers": 2, "norm": "group", "num_groups": 4})  # fmt: skip
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    d = loss.discriminator_loss(x, x.flip(-1))  # the built one is the default
    assert torch.isfinite(d.total) and loss.discriminator_parameters()
    d.total.backward()
    assert all(p.grad is not None for p in loss.discriminator_parameters())


def test_composite_generator_terms_add_up():
    torch.manual_seed(0)
    loss = _tiny_loss()
    dec = _ToyDecoder()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    recon = dec(torch.randn(2, 4, 32, 32))
    q_losses = {"commitment": torch.tensor(0.25), "codebook": torch.tensor(0.5)}
    out = loss.generator_loss(x, recon, step=5, last_layer=dec.conv_out.weight, quantizer_losses=q_losses)
    assert isinstance(out, GeneratorLossOutput)
    assert out.l1.item() == pytest.approx(l1_loss(recon, x).item(), rel=1e-6)
    assert out.l2.item() == pytest.approx(l2_loss(recon, x).item(), rel=1e-6)
    assert out.nll.item() == pytest.approx((0.2 * out.l1 + out.l2 + out.perceptual).item(), rel=1e-5)
    assert out.quantizer.item() == pytest.approx(0.75)
    expected_w = adaptive_generator_weight(out.nll, out.gan, dec.conv_out.weight)
    assert out.gan_weight.item() == pytest.approx(expected_w.item(), rel=1e-4)
    assert out.total.item() == pytest.approx((out.nll + out.gan_weight * out.gan + 0.75).item(), rel=1e-5)
    logs = out.to_dict()
    assert logs["quantizer/commitment"] == pytest.approx(0.25) and "perceptual" in logs
    out.total.backward()
    assert dec.conv_out.weight.grad is not None


def test_composite_warmup_disables_gan_and_needs_last_layer():
    loss = _tiny_loss(disc_start=10)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    recon = (x + 0.1 * torch.randn_like(x)).requires_grad_(True)
    before = loss.generator_loss(x, recon, step=3)
    assert before.disc_factor == 0.0 and before.gan.item() == 0.0 and before.gan_weight.item() == 0.0
    assert before.total.item() == pytest.approx(before.nll.item(), rel=1e-6)
    with pytest.raises(ValueError, match="last_layer"):
        loss.generator_loss(x, recon, step=10)
    d = loss.discriminator_loss(x, recon, step=3)
    assert d.disc_factor == 0.0 and d.total.item() == 0.0


def test_composite_fixed_gan_weight_non_saturating_and_kl():
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    loss = _tiny_loss(adaptive_weight=False, gan_weight=0.5, gan_loss="non_saturating", kl_weight=0.01,
                      perceptual_weight=0.0)  # fmt: skip
    assert loss.perceptual is None
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    recon = x.flip(-1)
    post = DiagonalGaussianDistribution(torch.randn(2, 8, 4, 4))
    out = loss.generator_loss(x, recon, step=0, posterior=post)
    assert out.gan_weight.item() == pytest.approx(0.5)
    assert out.gan.item() == pytest.approx(non_saturating_g_loss(loss.disc(recon)).item(), rel=1e-5)
    assert out.kl.item() == pytest.approx(0.01 * post.kl().mean().item(), rel=1e-5)
    assert out.perceptual.item() == 0.0


def test_composite_discriminator_step_trains_discriminator():
    loss = _tiny_loss()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    recon = torch.zeros_like(x, requires_grad=True)
    d = loss.discriminator_loss(x, recon, step=0)
    assert isinstance(d, DiscriminatorLossOutput)
    assert d.total.item() == pytest.approx(d.d_loss.item())
    d.total.backward()
    assert recon.grad is None  # reconstructions are detached in the discriminator step
    grads = [p.grad for p in loss.disc.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert set(d.to_dict()) >= {"disc/d_loss", "disc/logits_real"}


def test_discriminator_trainable_parameters_exclude_frozen_backbone():
    from coda_hf.discriminators import build_discriminator
    from coda_hf.training.optim import trainable_parameters

    disc = build_discriminator("projected", pretrained=False)
    assert {id(p) for p in trainable_parameters(disc)} == {id(p) for p in disc.heads.parameters()}


def test_composite_without_gan_and_bad_config():
    loss = _tiny_loss(gan_weight=0.0)
    assert not loss.uses_gan
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    out = loss(x, x * 0.5, step=100)
    assert out.gan.item() == 0.0
    with pytest.raises(ValueError, match="no GAN"):
        loss.discriminator_loss(x, x)
    with pytest.raises(ValueError, match="gan_loss"):
        _tiny_loss(gan_loss="wgan")
    with pytest.raises(ValueError, match="l1_weight"):
        _tiny_loss(l1_weight=-1.0)


def test_composite_projected_default_discriminator_runs():
    from coda_hf.discriminators import build_discriminator

    loss = ReconstructionLoss(perceptual_pretrained=False)
    dec = _ToyDecoder()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = loss.generator_loss(x, dec(torch.randn(2, 4, 32, 32)), last_layer=dec.conv_out.weight,
                              discriminator=build_discriminator("projected", pretrained=False))  # fmt: skip
    assert torch.isfinite(out.total) and out.gan_weight.item() > 0


def test_composite_lpips_backend_with_weights_file(tmp_path):
    src = LPIPS()
    save_file(src.state_dict(), str(tmp_path / "lpips.safetensors"))
    loss = _tiny_loss(
        perceptual_backend="lpips", lpips_weights=str(tmp_path / "lpips.safetensors"), gan_weight=0.0
    )
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = x.flip(-1)
    out = loss.generator_loss(x, y)
    assert out.perceptual.item() == pytest.approx(src(y, x).mean().item(), rel=1e-5)


@pytest.mark.slow
def test_lpips_weights_from_a_hub_repo(tmp_path):
    """The Hub-id branch (hf_hub_download) against coda_hf's local Hub-compatible server, in a subprocess
    so that HF_ENDPOINT / HF_HUB_OFFLINE are read at import."""
    import os
    import subprocess
    import sys
    import textwrap

    from coda_hf.testing import LocalHubServer

    src = LPIPS()
    save_file(src.state_dict(), str(tmp_path / "lpips_vgg.safetensors"))
    x, y = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    expected = float(src(x, y))
    torch.save({"x": x, "y": y}, tmp_path / "xy.pt")
    script = textwrap.dedent(
        f"""
        import torch
        from huggingface_hub import HfApi
        from coda_hf.losses import LPIPS

        api = HfApi()
        api.create_repo("org/lpips")
        api.upload_file(path_or_fileobj="lpips_vgg.safetensors", path_in_repo="lpips_vgg.safetensors", repo_id="org/lpips")
        xy = torch.load("xy.pt", weights_only=True)
        d = float(LPIPS(weights="org/lpips")(xy["x"], xy["y"]))
        assert abs(d - {expected!r}) < 1e-5 * max(1.0, abs(d)), d
        print("OK")
        """
    )
    (tmp_path / "scenario.py").write_text(script)
    with LocalHubServer(token="hf_local_test_token") as hub:
        env = dict(os.environ)
        env.update(
            HF_ENDPOINT=hub.endpoint, HF_HUB_OFFLINE="0", HF_TOKEN="hf_local_test_token",
            HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1",
        )  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "scenario.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-4000:]


def test_composite_generator_loss_under_no_grad_uses_fixed_gan_weight():
    # Validation: no gradients, so no adaptive weight (and no last_layer needed).
    loss = _tiny_loss(gan_weight=0.3)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        out = loss.generator_loss(x, x.flip(-1), step=0)
    assert out.gan_weight.item() == pytest.approx(0.3)
    assert out.total.item() == pytest.approx((out.nll + 0.3 * out.gan).item(), rel=1e-5)
