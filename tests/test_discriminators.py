"""PatchGAN and projected discriminators: shapes, gradients, options, DiffAugment."""

import pytest
import torch

from coda_hf.discriminators import (
    BatchNormLocal,
    DiscriminatorHead,
    PatchGANDiscriminator,
    ProjectedDiscriminator,
    TransformersViTFeatures,
    build_discriminator,
    diff_augment,
)
from coda_hf.discriminators.augment import rand_cutout, rand_translation


def _images(b=2, s=32):
    return (torch.rand(b, 3, s, s) * 2 - 1).requires_grad_(True)


# ----------------------------------------------------------------------------- PatchGAN


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
@pytest.mark.parametrize("n_layers", [2, 3])
def test_patchgan_shapes_and_gradients(norm, n_layers):
    d = PatchGANDiscriminator(ndf=8, n_layers=n_layers, norm=norm, num_groups=4)
    x = _images()
    out = d(x)
    side = 32 // 2**n_layers - 2  # two stride-1 4x4 convs, padding 1, each shrink by 1
    assert out.shape == (2, 1, side, side)
    out.mean().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in d.parameters())


def test_patchgan_norm_layers_and_bias():
    bn = PatchGANDiscriminator(ndf=8, n_layers=2, norm="batch")
    gn = PatchGANDiscriminator(ndf=8, n_layers=2, norm="group", num_groups=4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in gn.modules())
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in gn.modules()) == 2
    # Convs followed by BatchNorm carry no bias; the first and last conv do.
    assert [m.bias is not None for m in bn.modules() if isinstance(m, torch.nn.Conv2d)] == [
        True,
        False,
        False,
        True,
    ]
    # GroupNorm's statistics do not depend on the rest of the batch.
    gn.eval()
    x = torch.rand(3, 3, 32, 32)
    assert torch.allclose(gn(x)[:1], gn(x[:1]), atol=1e-5)


def test_patchgan_save_load_and_errors(tmp_path):
    d = PatchGANDiscriminator(ndf=8, n_layers=2, norm="group", num_groups=4).eval()
    d.save_pretrained(tmp_path / "d")
    d2 = PatchGANDiscriminator.from_pretrained(tmp_path / "d").eval()
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(d(x), d2(x), atol=1e-6)
    with pytest.raises(ValueError, match="norm"):
        PatchGANDiscriminator(norm="layer")
    with pytest.raises(ValueError, match="images"):
        d(torch.rand(1, 1, 32, 32))
    assert isinstance(build_discriminator("patchgan", ndf=8), PatchGANDiscriminator)
    with pytest.raises(ValueError, match="unknown discriminator"):
        build_discriminator("msg")


# ----------------------------------------------------------------------------- projected


def test_projected_efficientnet_shapes_and_gradients():
    d = ProjectedDiscriminator(pretrained=False, feature_levels=(1, 2, 3, 4))
    x = _images()
    out = d(x)
    # EfficientNet stage maps at 32 px: strides 4, 8, 16, 32 -> 8x8, 4x4, 2x2, 1x1 positions.
    assert out.shape == (2, 64 + 16 + 4 + 1)
    out.mean().backward()
    assert x.grad.abs().sum() > 0  # the generator gets gradients through the frozen features
    assert all(p.grad is None for p in d.features.parameters())
    assert not any(p.requires_grad for p in d.features.parameters())
    head_grads = [p.grad for p in d.heads.parameters() if p.requires_grad]
    assert head_grads and all(g is not None for g in head_grads)
    # Spectral norm is on every head conv.
    assert all(hasattr(m, "parametrizations") for m in d.heads.modules() if isinstance(m, torch.nn.Conv2d))


def test_projected_backbone_stays_frozen_in_train_mode():
    d = ProjectedDiscriminator(pretrained=False, feature_levels=(3,), augment_policy="").train()
    assert d.training and not d.features.training
    assert not any(m.training for m in d.features.modules())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert d(x).shape == (2, 4)


def test_projected_augmentation_only_in_training():
    d = ProjectedDiscriminator(
        pretrained=False, feature_levels=(2,), augment_policy="color,translation,cutout"
    )
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    d.eval()
    assert torch.equal(d(x), d(x))  # deterministic without augmentation
    d.train()
    torch.manual_seed(0)
    a = d(x)
    torch.manual_seed(1)
    b = d(x)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="policy"):
        ProjectedDiscriminator(pretrained=False, augment_policy="rotate")
    with pytest.raises(ValueError, match="feature_levels"):
        ProjectedDiscriminator(pretrained=False, feature_levels=(9,))


def test_projected_with_user_supplied_dino_model():
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                       image_size=32, patch_size=8)  # fmt: skip
    feats = TransformersViTFeatures(Dinov2Model(cfg), layers=(0, 1), image_size=32)
    assert feats.feature_channels == (16, 16)
    d = ProjectedDiscriminator(feature_network=feats, head_kernel_size=9, augment_policy="translation")
    assert d.config.backbone == "custom" and "feature_network" not in d.config
    x = _images()
    out = d(x)
    assert out.shape == (2, 2 * 16)  # 2 tapped blocks x (32/8)^2 patch tokens
    out.mean().backward()
    assert x.grad.abs().sum() > 0
    assert all(h.dims == 1 for h in d.heads)
    assert not any(p.requires_grad for p in feats.parameters())
    with pytest.raises(ValueError, match="out of range"):
        TransformersViTFeatures(Dinov2Model(cfg), layers=(5,))
    with pytest.raises(ValueError, match="custom feature network"):
        ProjectedDiscriminator(backbone="custom")
    with pytest.raises(ValueError, match="feature_channels"):
        ProjectedDiscriminator(feature_network=torch.nn.Identity())


def test_discriminator_head_and_local_batchnorm():
    h1 = DiscriminatorHead(8, dims=1, kernel_size=9)
    assert h1(torch.randn(4, 8, 20)).shape == (4, 20)
    h2 = DiscriminatorHead(8, dims=2, kernel_size=3)
    assert h2(torch.randn(4, 8, 5, 5)).shape == (4, 25)
    with pytest.raises(ValueError, match="dims"):
        DiscriminatorHead(8, dims=3)
    bn = BatchNormLocal(3, virtual_bs=2)
    x = torch.randn(4, 3, 10) * 5 + 2
    y = bn(x).view(2, 2, 3, 10)  # two virtual batches of 2
    assert torch.allclose(y.mean(dim=(1, 3)), torch.zeros(2, 3), atol=1e-5)
    assert torch.allclose(y.var(dim=(1, 3), unbiased=False), torch.ones(2, 3), atol=1e-3)


# ----------------------------------------------------------------------------- DiffAugment


def test_translation_shifts_content_with_zero_padding():
    x = torch.arange(64.0).view(1, 1, 8, 8) + 1
    g = torch.Generator().manual_seed(0)
    y = rand_translation(x, ratio=0.25, generator=g)
    # Find the shift by brute force: y must equal x shifted by some (dy, dx) with zeros filled in.
    found = False
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            shifted = torch.zeros_like(x)
            ys, xs = slice(max(dy, 0), 8 + min(dy, 0)), slice(max(dx, 0), 8 + min(dx, 0))
            yo, xo = slice(max(-dy, 0), 8 + min(-dy, 0)), slice(max(-dx, 0), 8 + min(-dx, 0))
            shifted[..., ys, xs] = x[..., yo, xo]
            found |= torch.equal(shifted, y)
    assert found


def test_diff_augment_color_changes_statistics_and_is_differentiable():
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
    y = diff_augment(x, "color", generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert not torch.allclose(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)))
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert torch.equal(diff_augment(x, ""), x)


def test_cutout_zeroes_a_square():
    x = torch.ones(2, 3, 16, 16)
    y = rand_cutout(x, ratio=0.5, generator=torch.Generator().manual_seed(0))
    zeros = (y == 0).all(dim=1).sum(dim=(1, 2))  # (B,) zeroed pixels per image
    assert (zeros > 0).all() and (zeros <= 64).all()


def test_projected_save_load_round_trip(tmp_path):
    d = ProjectedDiscriminator(pretrained=False, feature_levels=(2, 3))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    d.train()(x)  # one spectral-norm power iteration in training mode
    d.eval()
    d.save_pretrained(tmp_path / "pd")
    d2 = ProjectedDiscriminator.from_pretrained(tmp_path / "pd").eval()
    assert tuple(d2.config.feature_levels) == tuple(d.config.feature_levels)
    assert torch.allclose(d(x), d2(x), atol=1e-6)


def test_projected_custom_backbone_save_load(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                       image_size=32, patch_size=8)  # fmt: skip
    d = ProjectedDiscriminator(
        feature_network=TransformersViTFeatures(Dinov2Model(cfg), layers=(0, 1), image_size=32),
        head_kernel_size=9,
    ).eval()
    d.save_pretrained(tmp_path / "pd")
    with pytest.raises(ValueError, match="custom feature network"):
        ProjectedDiscriminator.from_pretrained(tmp_path / "pd")
    fresh = TransformersViTFeatures(Dinov2Model(cfg), layers=(0, 1), image_size=32)  # other random weights
    d2 = ProjectedDiscriminator.from_pretrained(tmp_path / "pd", feature_network=fresh).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(d(x), d2(x), atol=1e-6)  # saved backbone and head weights restored
