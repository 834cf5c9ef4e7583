"""PSNR and SSIM on ``[0, 255]`` images, in torch, matching scikit-image.

* :func:`psnr` == ``skimage.metrics.peak_signal_noise_ratio(ref, img, data_range=255)``.
* :func:`ssim` == ``skimage.metrics.structural_similarity(ref, img, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, channel_axis=..., data_range=255)`` (Wang et al. 2004):
  an 11x11 Gaussian window (sigma 1.5, truncated at 3.5 sigma), population covariances, the mean
  taken over pixels whose window lies inside the image (skimage crops the 5-pixel border), then
  over channels.

Both take ``(B, C, H, W)`` (or ``(C, H, W)``) tensors and return one value per image, in float64.
Tokenizer papers report them on 8-bit images: use :func:`to_uint8_range` on ``[-1, 1]`` outputs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..image_io import load_image, to_uint8_range  # noqa: F401  (to_uint8_range: the one [-1, 1] -> 8-bit mapping)

SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _pair(prediction: torch.Tensor, reference: torch.Tensor, fn: str) -> tuple[torch.Tensor, torch.Tensor]:
    for name, t in (("prediction", prediction), ("reference", reference)):
        if not isinstance(t, torch.Tensor) or t.ndim not in (3, 4):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{fn}: {name} must be a (B, C, H, W) or (C, H, W) tensor; got {shape}")
    if prediction.shape != reference.shape:
        raise ValueError(f"{fn}: prediction {tuple(prediction.shape)} and reference {tuple(reference.shape)} differ in shape")
    if prediction.ndim == 3:
        prediction, reference = prediction[None], reference[None]
    return prediction.detach().double(), reference.detach().double().to(prediction.device)


def psnr(prediction: torch.Tensor, reference: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """``(B,)`` peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)`` per image (inf if equal)."""
    x, y = _pair(prediction, reference, "psnr")
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def gaussian_window(sigma: float = 1.5, truncate: float = 3.5, dtype=torch.float64) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius ``int(truncate * sigma + 0.5)`` (scipy.ndimage's kernel)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=dtype)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _filter_valid(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of ``(N, 1, H, W)`` without padding: only fully-inside windows."""
    k = window.numel()
    x = F.conv2d(x, window.view(1, 1, 1, k))
    return F.conv2d(x, window.view(1, 1, k, 1))


def ssim(
    prediction: torch.Tensor,
    reference: torch.Tensor,
    data_range: float = 255.0,
    sigma: float = 1.5,
    truncate: float = 3.5,
) -> torch.Tensor:
    """``(B,)`` mean structural similarity per image (averaged over channels), in ``[-1, 1]``."""
    x, y = _pair(prediction, reference, "ssim")
    b, c, h, w = x.shape
    window = gaussian_window(sigma, truncate).to(x.device)
    if min(h, w) < window.numel():
        raise ValueError(f"ssim: images of size {h}x{w} are smaller than the {window.numel()}x{window.numel()} window")
    # Each channel is an independent image: (B*C, 1, H, W).
    x = x.reshape(b * c, 1, h, w)
    y = y.reshape(b * c, 1, h, w)
    # One conv pass over the five moments: (5*B*C, 1, H, W) -> (5, B*C, 1, H', W').
    moments = _filter_valid(torch.cat([x, y, x * x, y * y, x * y]), window).chunk(5)
    ux, uy, uxx, uyy, uxy = moments
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy  # population (co)variances
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.reshape(b, c, -1).mean(dim=2).mean(dim=1)



def image_to_tensor(image) -> torch.Tensor:
    """PIL image, ``(H, W[, C])`` array or ``(C, H, W)`` tensor -> ``(C, H, W)`` float64 tensor (values kept).

    PIL images become 8-bit RGB by :func:`coda_hf.image_io.load_image`'s rules. This is how the ``evaluate``
    modules read their inputs.
    """
    from PIL import Image

    if isinstance(image, torch.Tensor):
        if image.ndim != 3:
            raise ValueError(f"image tensors must be (C, H, W); got {tuple(image.shape)}")
        return image.detach().double()
    if isinstance(image, Image.Image):
        image = load_image(image)
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"image arrays must be (H, W) or (H, W, C); got shape {array.shape}")
    return torch.from_numpy(array).permute(2, 0, 1)
