"""Metrics against their references: scipy sqrtm, scikit-image PSNR/SSIM, hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from _helpers_metrics import tiny_autoencoder_kl, tiny_vqgan, write_images
from PIL import Image

from coda_hf.image_io import load_pixel_values
from coda_hf.metrics import (
    EVALUATE_MODULES,
    CodebookStatistics,
    FrechetStatistics,
    InceptionV3Features,
    TokenizerEvaluator,
    convert_pytorch_fid_weights,
    effnet_features,
    evaluate_tokenizer,
    frechet_distance,
    image_to_tensor,
    inception_features,
    metric_path,
    metrics_markdown_row,
    psnr,
    sqrtm_psd,
    ssim,
    to_uint8_range,
    trace_sqrtm_product,
)
from coda_hf.metrics.eval_data import image_batches, load_image_dataset
from coda_hf.metrics.evaluation import MARKDOWN_HEADER
from coda_hf.metrics.plots import (
    pca_project,
    plot_code_usage,
    plot_latent_pca,
    plot_quant_error,
    plot_reconstructions,
)


def random_covariance(d: int, n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    return np.cov(x, rowvar=False)


# ---------------------------------------------------------------- Fréchet distance
@pytest.mark.parametrize("d", [3, 32])
def test_sqrtm_psd_matches_scipy(d):
    rng = np.random.default_rng(d)
    cov = random_covariance(d, 4 * d, rng)
    ours = sqrtm_psd(cov).numpy()
    ref = scipy.linalg.sqrtm(cov).real
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 1e-6
    np.testing.assert_allclose(ours @ ours, cov, rtol=1e-8, atol=1e-8 * np.abs(cov).max())


def test_trace_sqrtm_product_matches_scipy():
    rng = np.random.default_rng(1)
    s1, s2 = random_covariance(24, 100, rng), random_covariance(24, 100, rng)
    ref = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    assert abs(float(trace_sqrtm_product(s1, s2)) - ref) / abs(ref) < 1e-6


def test_frechet_distance_1d_gaussians_by_hand():
    # N(1, 2^2) vs N(3, 3^2): (1 - 3)^2 + (2 - 3)^2 = 5
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == pytest.approx(5.0)
    # diagonal Gaussians: sum over dimensions of the 1-D case
    d = frechet_distance(torch.zeros(2), torch.diag(torch.tensor([1.0, 4.0])), torch.ones(2), torch.diag(torch.tensor([9.0, 16.0])))
    assert d == pytest.approx(2 + (1 - 3) ** 2 + (2 - 4) ** 2)


def test_frechet_distance_matches_scipy_formula():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    s1, s2 = random_covariance(16, 64, rng), random_covariance(16, 64, rng)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6)


def test_frechet_distance_rejects_bad_shapes():
    with pytest.raises(ValueError, match="mu1 and mu2"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="square"):
        sqrtm_psd(np.zeros((2, 3)))


def test_frechet_statistics_streaming_equals_numpy(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 6)) * 3 + 5
    stats = FrechetStatistics(6)
    for chunk in np.array_split(x, 7):
        stats.update(torch.from_numpy(chunk).float())
    np.testing.assert_allclose(stats.mean().numpy(), x.astype(np.float32).mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.covariance().numpy(), np.cov(x.astype(np.float32), rowvar=False), rtol=1e-5, atol=1e-6)
    assert stats.num_samples == 50
    # distance to itself is zero; to a shifted copy it is |shift|^2
    same = FrechetStatistics.from_features(x.astype(np.float32))
    assert abs(stats.distance(same)) < 1e-8
    assert stats.distance(FrechetStatistics.from_features(x.astype(np.float32) + 2.0)) == pytest.approx(6 * 4.0, rel=1e-6)
    stats.save(tmp_path / "ref.safetensors")
    loaded = FrechetStatistics.load(tmp_path / "ref.safetensors")
    assert loaded.num_samples == 50 and torch.equal(loaded.outer_sum, stats.outer_sum)


def test_frechet_statistics_errors():
    stats = FrechetStatistics(4)
    with pytest.raises(ValueError, match="empty"):
        stats.mean()
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        stats.update(torch.zeros(2, 5))
    stats.update(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="at least 2 samples"):
        stats.covariance()
    with pytest.raises(ValueError, match="feature sizes differ"):
        stats.distance(FrechetStatistics(3))


def test_frechet_statistics_rank_deficient_is_finite():
    # Fewer samples than dimensions (few images, 2048-d features): eigh-based sqrt stays real and finite.
    x = torch.randn(5, 64, dtype=torch.float64)
    d = FrechetStatistics.from_features(x).distance(FrechetStatistics.from_features(x + 0.1))
    assert math.isfinite(d) and d == pytest.approx(64 * 0.01, abs=1e-5)


# ---------------------------------------------------------------- PSNR / SSIM
def _photo_pairs():
    import skimage.data

    rng = np.random.default_rng(0)
    for name, channel_axis in (("astronaut", 2), ("chelsea", 2), ("camera", None)):
        ref = getattr(skimage.data, name)()[::3, ::3]
        noisy = np.clip(ref.astype(np.float64) + rng.normal(0, 15, ref.shape), 0, 255).astype(np.uint8)
        yield name, ref, noisy, channel_axis


def _chw(a: np.ndarray) -> torch.Tensor:
    return image_to_tensor(a)


@pytest.mark.parametrize("name,ref,noisy,channel_axis", list(_photo_pairs()), ids=["astronaut", "chelsea", "camera"])
def test_psnr_ssim_match_skimage_on_photos(name, ref, noisy, channel_axis):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    ours_psnr = float(psnr(_chw(noisy), _chw(ref))[0])
    assert ours_psnr == pytest.approx(peak_signal_noise_ratio(ref, noisy, data_range=255), abs=1e-3)
    ref_ssim = structural_similarity(ref, noisy, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     channel_axis=channel_axis, data_range=255)  # fmt: skip
    assert float(ssim(_chw(noisy), _chw(ref))[0]) == pytest.approx(ref_ssim, abs=1e-3)
    assert 0.0 < ref_ssim < 0.99  # the noise is visible: the check is not trivial


def test_psnr_ssim_batched_and_identity():
    x = torch.rand(3, 3, 24, 24) * 255
    y = (x + torch.randn_like(x) * 10).clamp(0, 255)
    batched = ssim(y, x)
    assert batched.shape == (3,)
    assert torch.allclose(batched[1], ssim(y[1], x[1])[0])
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64))
    assert torch.isinf(psnr(x, x)).all()
    # data_range changes the constants: PSNR shifts by 20 log10(ratio)
    assert float(psnr(y, x, data_range=1.0)[0]) == pytest.approx(float(psnr(y, x)[0]) - 20 * math.log10(255), abs=1e-9)


def test_psnr_ssim_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match="smaller than the 11x11 window"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="prediction"):
        ssim(torch.zeros(8, 8), torch.zeros(8, 8))


def test_to_uint8_range():
    x = torch.tensor([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0])
    assert to_uint8_range(x).tolist() == [0.0, 0.0, 128.0, 255.0, 255.0, 255.0]


# ---------------------------------------------------------------- Inception
PYTORCH_FID_KEYS = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_4a_3x3.bn.running_mean": (192,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
    "Mixed_7c.branch3x3dbl_3b.bn.running_var": (384,),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}


def test_inception_architecture_matches_pytorch_fid_naming():
    net = InceptionV3Features()
    state = net.state_dict()
    for key, shape in PYTORCH_FID_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert not any("AuxLogits" in k for k in state)
    # torchvision inception_v3 without aux head = 23,834,568 parameters; FID's 1008-way fc adds 8 * 2049.
    assert sum(p.numel() for p in net.parameters()) == 23_834_568 + 8 * 2049
    assert not any(p.requires_grad for p in net.parameters())


def test_inception_features_shape_and_weight_files(tmp_path):
    net = InceptionV3Features(resize_to=75)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    feats = net(x)
    assert feats.shape == (2, 2048)
    # The pytorch-fid file: a plain state dict without num_batches_tracked, read with weights_only=True.
    pth = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}, pth)
    assert torch.allclose(InceptionV3Features(weights=pth, resize_to=75)(x), feats)
    st = convert_pytorch_fid_weights(pth, tmp_path / "pt_inception-2015-12-05-6726825d.safetensors")
    assert torch.allclose(InceptionV3Features(weights=st, resize_to=75)(x), feats)
    pth.unlink()
    assert torch.allclose(InceptionV3Features(weights=tmp_path, resize_to=75)(x), feats)  # a folder
    wrapped = inception_features(st, resize_to=75)
    assert wrapped.dim == 2048 and torch.allclose(wrapped(x), feats)


def test_inception_weights_from_hub_id(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError
    from safetensors.torch import save_file

    net = InceptionV3Features(resize_to=75)
    file = tmp_path / "model.safetensors"
    save_file(net.state_dict(), str(file))
    asked = []

    def fake_download(repo_id, filename, **kw):
        asked.append((repo_id, filename))
        if filename != "model.safetensors":
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(file)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    loaded = InceptionV3Features(weights="someone/fid-inception", resize_to=75)
    assert asked[0] == ("someone/fid-inception", "pt_inception-2015-12-05-6726825d.safetensors")
    assert torch.equal(loaded.fc.weight, net.fc.weight)


def test_inception_rejects_wrong_weights(tmp_path):
    from safetensors.torch import save_file

    save_file({"fc.weight": torch.zeros(1008, 2048)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(RuntimeError, match="Missing key"):
        InceptionV3Features(weights=tmp_path / "bad.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no Inception weights"):
        InceptionV3Features(weights=tmp_path / "empty")


# ---------------------------------------------------------------- codebook statistics
def test_codebook_statistics_by_hand():
    stats = CodebookStatistics(8)
    # batch of 2 images, 2 levels: level 0 (2, 1, 1), level 1 (2, 2, 2)
    stats.update([torch.tensor([[[0]], [[1]]]), torch.tensor([[[0, 1], [2, 3]], [[0, 0], [0, 0]]])],
                 quant_error=torch.tensor([0.4, 0.2]))  # fmt: skip
    stats.update([torch.tensor([[[1]]]), torch.tensor([[[1, 1], [1, 1]]])], quant_error=torch.tensor([0.1, 0.05]))
    out = stats.compute()
    counts = np.array([6, 7, 1, 1, 0, 0, 0, 0], dtype=np.float64)
    p = counts[counts > 0] / counts.sum()
    assert out["utilization"] == 0.5 and out["codes_used"] == 4 and out["codebook_size"] == 8
    assert out["perplexity"] == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-6)
    assert out["tokens_per_image"] == 5.0
    assert out["quant_error"] == pytest.approx([(2 * 0.4 + 0.1) / 3, (2 * 0.2 + 0.05) / 3])
    with pytest.raises(ValueError, match="3 levels"):
        stats.update([torch.zeros(1, 1, 1, dtype=torch.long)], quant_error=torch.zeros(3))
    with pytest.raises(ValueError, match="indices must lie"):
        stats.update([torch.full((1, 1, 1), 9)])
    with pytest.raises(ValueError, match="empty"):
        CodebookStatistics(4).compute()


# ---------------------------------------------------------------- evaluate modules
@pytest.mark.parametrize("name", EVALUATE_MODULES)
def test_evaluate_modules_load_by_path_offline(name, monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    for path in (metric_path(name), f"{metric_path(name)}/{name}.py"):
        module = evaluate.load(path)
        assert isinstance(module, evaluate.Metric)


def test_evaluate_modules_compute_the_library_values():
    import evaluate
    import skimage.data

    ref = skimage.data.astronaut()[::8, ::8]
    rng = np.random.default_rng(0)
    noisy = np.clip(ref + rng.normal(0, 10, ref.shape), 0, 255).astype(np.uint8)
    out = evaluate.load(metric_path("psnr")).compute(predictions=[noisy, ref], references=[ref, ref])
    assert out["psnr_per_image"][0] == pytest.approx(float(psnr(_chw(noisy), _chw(ref))[0]))
    assert math.isinf(out["psnr_per_image"][1])
    out = evaluate.load(metric_path("ssim")).compute(predictions=[Image.fromarray(noisy)], references=[Image.fromarray(ref)])
    assert out["ssim"] == pytest.approx(float(ssim(_chw(noisy), _chw(ref))[0]))
    x, y = rng.normal(size=(40, 5)), rng.normal(size=(40, 5)) + 1
    out = evaluate.load(metric_path("frechet_distance")).compute(predictions=x, references=y)
    expected = frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert out["frechet_distance"] == pytest.approx(expected, rel=1e-9) and out["num_samples"] == 40
    out = evaluate.load(metric_path("codebook_usage")).compute(predictions=[[0, 1, 1], [2, 2, 2]], codebook_size=8)
    assert out["utilization"] == 3 / 8 and out["tokens_per_image"] == 3.0
    with pytest.raises(ValueError, match="codebook_size"):
        evaluate.load(metric_path("codebook_usage")).compute(predictions=[[0]])


def test_metric_path_unknown():
    with pytest.raises(ValueError, match="unknown metric module 'fid'"):
        metric_path("fid")


# ---------------------------------------------------------------- plots
def test_plots_write_pngs(tmp_path):
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    paths = [
        plot_reconstructions(x, x.flip(0), tmp_path / "grid.png"),
        plot_code_usage(torch.tensor([5, 0, 3, 1]), tmp_path / "usage.png"),
        plot_quant_error([0.18, 0.12, 0.094], tmp_path / "qe.png"),
        plot_latent_pca(torch.randn(100, 4), torch.randn(100, 4).round(), tmp_path / "pca.png"),
    ]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width > 50
    with pytest.raises(ValueError, match="quant_error is empty"):
        plot_quant_error([], tmp_path / "x.png")


def test_pca_project_orders_variance():
    x = torch.randn(500, 3) * torch.tensor([5.0, 1.0, 0.1])
    pc, pq = pca_project(x, x)
    assert torch.allclose(pc, pq)
    assert pc[:, 0].var() > pc[:, 1].var() > 0.5
    assert pc[:, 0].var() == pytest.approx(float(torch.linalg.eigvalsh(torch.cov(x.T.double()))[-1]), rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        pca_project(torch.randn(10, 1), torch.randn(10, 1))


# ---------------------------------------------------------------- evaluation loop
class IdentityAutoencoder(torch.nn.Module):
    """A 'perfect' continuous autoencoder: PSNR inf, SSIM 1, FD 0."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def encode(self, x):
        from types import SimpleNamespace

        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: x * self.scale))

    def decode(self, z):
        from types import SimpleNamespace

        return SimpleNamespace(sample=z)


def test_evaluate_tokenizer_perfect_reconstruction():
    images = [torch.rand(2, 3, 32, 32) * 2 - 1 for _ in range(3)]
    m = evaluate_tokenizer(IdentityAutoencoder(), images, feature_extractors={"fd_effnet": effnet_features()}, progress=False)
    assert m["num_images"] == 6 and m["continuous"] is True
    assert math.isinf(m["psnr"]) and m["ssim"] == pytest.approx(1.0)
    assert abs(m["fd_effnet"]) < 1e-6 and "utilization" not in m and "NOT comparable" in m["fd_effnet_note"]
    assert "bits_per_pixel" not in m  # a continuous latent has no finite rate


def test_evaluate_tokenizer_discrete_matches_direct_computation(tmp_path):
    model = tiny_vqgan(codebook_size=16, num_levels=2).train()
    images = torch.rand(5, 3, 32, 32) * 2 - 1
    batches = [images[:2], {"pixel_values": images[2:4]}, images[4:]]
    m = evaluate_tokenizer(model, batches, feature_extractors={}, num_images=4, output_dir=tmp_path, progress=False)
    assert model.training  # mode restored
    model.eval()
    assert m["num_images"] == 4 and m["continuous"] is False
    with torch.no_grad():
        enc = model.encode(images[:4])
        recon = model.decode(enc.indices)
    ref8, rec8 = to_uint8_range(images[:4]), to_uint8_range(recon)
    assert m["psnr"] == pytest.approx(float(psnr(rec8, ref8).mean()), rel=1e-9)
    assert m["ssim"] == pytest.approx(float(ssim(rec8, ref8).mean()), rel=1e-9)
    used = torch.unique(torch.cat([i.reshape(-1) for i in enc.indices])).numel()
    assert m["utilization"] == used / 16 and m["codes_used"] == used
    assert m["tokens_per_image"] == 2 * 16 * 16 and len(m["quant_error"]) == 2
    assert m["bits_per_pixel"] == pytest.approx(2 * 16 * 16 * 4 / (32 * 32))  # tokens x log2(16 codes) / pixels
    stats = model.quantizer(enc.latents).stats["quant_error"]
    assert m["quant_error"] == pytest.approx(stats.tolist(), rel=1e-5)
    assert {p.name for p in tmp_path.iterdir()} == {"reconstructions.png", "code_usage.png", "quant_error.png", "latent_pca.png"}


def test_evaluator_quantizes_each_batch_once(monkeypatch):
    """``encode`` returns the quantizer's statistics with the codes: the evaluator quantizes every batch once,
    without eval losses (the attention quantizer's entropy term is a softmax over the whole codebook)."""
    from _helpers_coda import images as coda_images
    from _helpers_coda import tiny_coda

    from coda_hf.quantizers.attention import AttentionQuantizer
    from coda_hf.quantizers.multiscale import MultiScaleResidualQuantizer

    model = tiny_coda()
    calls, searches = [], []
    forward, search = MultiScaleResidualQuantizer.forward, AttentionQuantizer.search
    monkeypatch.setattr(MultiScaleResidualQuantizer, "forward", lambda self, *a, **k: calls.append(k) or forward(self, *a, **k))
    monkeypatch.setattr(AttentionQuantizer, "search", lambda self, f, with_losses=False: searches.append(with_losses) or search(self, f, with_losses))
    ev = TokenizerEvaluator(model, feature_extractors={})
    ev.update(coda_images(2))
    assert calls == [{"with_losses": False}] and searches == [False] * 3  # one pass, 3 levels, no losses
    m = ev.compute()
    monkeypatch.undo()
    with torch.no_grad():
        direct = model.quantizer(model.encode_latents(coda_images(2))).stats["quant_error"]
    assert m["quant_error"] == pytest.approx(direct.tolist(), rel=1e-6)


def test_evaluator_input_errors():
    ev = TokenizerEvaluator(tiny_autoencoder_kl(), feature_extractors={})
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        ev.update(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="no images"):
        ev.compute()
    with pytest.raises(ValueError, match="pixel_values"):
        evaluate_tokenizer(tiny_autoencoder_kl(), [{"x": torch.zeros(1, 3, 32, 32)}], feature_extractors={}, progress=False)


def test_markdown_row():
    row = metrics_markdown_row({"psnr": 22.04, "ssim": 0.594, "utilization": 1.0, "tokens_per_image": 680.0,
                                "codebook_size": 16384, "num_images": 50000}, "coda-mar")  # fmt: skip
    assert row == "| coda-mar | 680 | 16384 | - | - | 22.04 | 59.4 | 100.0 | - | 50000 |"
    assert row.count("|") == MARKDOWN_HEADER.splitlines()[0].count("|")


# ---------------------------------------------------------------- evaluation data
def test_evaluation_transform_resizes_and_crops():
    image = Image.fromarray(np.tile(np.arange(60, dtype=np.uint8)[None, :, None], (30, 1, 3)))  # 60 wide, 30 high
    x = load_pixel_values(image, 16)
    assert x.shape == (3, 16, 16) and x.min() >= -1 and x.max() <= 1
    # center crop of a horizontal ramp: the middle column is close to the middle of the ramp
    assert abs(float(x[0, 8, 8]) - (29.5 / 127.5 - 1)) < 0.1
    with pytest.raises(ValueError, match="cannot load an image from a int"):
        load_pixel_values(3, 16)


def test_image_sources_folder_parquet_webdataset(tmp_path):
    import io
    import tarfile

    import datasets

    paths = write_images(tmp_path / "folder", n=5)
    ds = load_image_dataset(data=str(tmp_path / "folder"))
    assert sum(b.shape[0] for b in image_batches(ds, 16, batch_size=2)) == 5  # recursive
    # parquet shard
    table = datasets.Dataset.from_dict({"image": [str(p) for p in paths]}).cast_column("image", datasets.Image())
    table.to_parquet(str(tmp_path / "shard.parquet"))
    batches = list(image_batches(load_image_dataset(data=str(tmp_path / "shard.parquet")), 16, batch_size=4))
    assert [b.shape[0] for b in batches] == [4, 1]
    # webdataset shard
    (tmp_path / "wds").mkdir()
    with tarfile.open(tmp_path / "wds" / "shard-000.tar", "w") as tar:
        for i, p in enumerate(paths[:3]):
            data = p.read_bytes()
            info = tarfile.TarInfo(f"{i:04d}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ds = load_image_dataset(data=str(tmp_path / "wds"))
    assert sum(b.shape[0] for b in image_batches(ds, 16, batch_size=2)) == 3
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_dataset(data=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="needs a split"):
        load_image_dataset(dataset_name="someone/images")
    with pytest.raises(ValueError, match="exactly one"):
        load_image_dataset()


def test_image_batches_split_between_processes(tmp_path):
    write_images(tmp_path, n=7)
    ds = load_image_dataset(data=str(tmp_path))
    shares = [torch.cat(list(image_batches(ds, 16, batch_size=2, num_images=5, rank=r, world_size=2))) for r in range(2)]
    everything = torch.cat(list(image_batches(ds, 16, batch_size=8, num_images=5)))
    assert [s.shape[0] for s in shares] == [3, 2]
    together = torch.cat(shares)
    # every image goes to exactly one process
    assert all(any(torch.equal(img, other) for other in together) for img in everything)


# ---------------------------------------------------------------- reduction across processes
def _sync_worker(rank: int, world_size: int, init_file: str, result_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        x = torch.randn(10, 3)
        fd = FrechetStatistics(3)
        fd.update(x[:6] if rank == 0 else x[6:])
        cb = CodebookStatistics(8)
        if rank == 0:  # rank 1 saw no batch at all: the level count must still agree
            cb.update([torch.tensor([[[0, 1]]]), torch.tensor([[[2, 2]]])], quant_error=torch.tensor([0.5, 0.25]))
            cb.update([torch.tensor([[[3, 3]]]), torch.tensor([[[3, 3]]])], quant_error=torch.tensor([0.3, 0.15]))
        fd.sync()
        cb.sync()
        if rank == 1:
            torch.save({"cov": fd.covariance(), "mean": fd.mean(), "cb": cb.compute()}, result_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_statistics_sync_across_two_processes(tmp_path):
    import torch.multiprocessing as mp

    result = tmp_path / "result.pt"
    mp.spawn(_sync_worker, args=(2, str(tmp_path / "init"), str(result)), nprocs=2, join=True)
    out = torch.load(result, weights_only=True)
    torch.manual_seed(0)
    x = torch.randn(10, 3).double()
    assert torch.allclose(out["mean"], x.mean(0)) and torch.allclose(out["cov"], torch.cov(x.T))
    assert out["cb"]["utilization"] == 0.5 and out["cb"]["tokens_per_image"] == 4.0
    assert out["cb"]["quant_error"] == pytest.approx([0.4, 0.2])


# ---------------------------------------------------------------- options of the feature helpers
def test_feature_extractor_options():
    from coda_hf.features import efficientnet_lite0_weights_path
    from coda_hf.metrics import default_feature_extractors
    from coda_hf.metrics.inception import InceptionE

    x = torch.rand(2, 3, 32, 32) * 2 - 1
    default = effnet_features()
    explicit = effnet_features(weights_path=efficientnet_lite0_weights_path())
    assert default.dim == 1280 and torch.allclose(default(x), explicit(x))
    small = effnet_features(pretrained=False, resize_to=64)
    assert small.network.resize_to == 64 and small(x).shape == (2, 1280)
    extractors = default_feature_extractors(effnet_pretrained=False)
    assert set(extractors) == {"fd_effnet"}
    with pytest.raises(ValueError, match="pool must be"):
        InceptionE(2048, pool="min")


def test_frechet_statistics_load_rejects_other_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a FrechetStatistics file"):
        FrechetStatistics.load(tmp_path / "other.safetensors")


def test_evaluator_keeps_bounded_samples():
    model = tiny_vqgan(codebook_size=16, num_levels=1)
    ev = TokenizerEvaluator(model, feature_extractors={}, num_grid_images=3, max_pca_points=100)
    for _ in range(2):
        ev.update(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert sum(o.shape[0] for o, _ in ev.grid) == 3
    assert sum(c.shape[0] for c, _ in ev.pca) == 100  # 2 * 16 * 16 latent positions seen, 100 kept
    assert ev.compute()["num_images"] == 4 and ev.compute() == ev.compute()
    with pytest.raises(RuntimeError, match="already reduced"):
        ev.update(torch.rand(1, 3, 32, 32))
