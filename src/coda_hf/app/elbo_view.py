"""View 5, ELBO: ``ELBO = E_q[log p(x|z)] - KL(q(z|x) || N(0, I))`` for one image, for every bundled beta-VAE.

The models differ only in the KL weight ``beta`` they were trained with (Higgins et al. 2017): a larger beta
buys a smaller KL (fewer active latent dimensions, a posterior closer to the prior) with a worse
reconstruction term. The reconstruction term is a Monte-Carlo estimate over :data:`SAMPLES` seeded posterior
samples; the KL is exact (closed form, per latent dimension: :func:`coda_hf.losses.kl_per_channel`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from . import charts
from .images import side_by_side, to_pil, upscale

SAMPLES = 32
SEED = 0
UPLOAD_LABEL = "Upload a picture (made 28x28 grey)"


@dataclass
class ElboTerms:
    beta: float
    log_likelihood: float  # E_q[log p(x|z)] (nats)
    kl_per_dim: np.ndarray  # (L,) nats
    reconstruction: Image.Image  # decoder mean at the posterior mean

    @property
    def kl(self) -> float:
        return float(self.kl_per_dim.sum())

    @property
    def elbo(self) -> float:
        return self.log_likelihood - self.kl


def fashion_tensor(image: np.ndarray) -> torch.Tensor:
    """``(28, 28)`` uint8 -> ``(1, 1, 28, 28)`` in ``[0, 1]``."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8)).float().div(255.0)[None, None]


def upload_to_fashion(image: Image.Image, size: int = 28) -> np.ndarray:
    """Any RGB image -> a ``size`` x ``size`` grey uint8 array (central square), as the Fashion models expect."""
    w, h = image.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    return np.asarray(image.convert("L").crop(box).resize((size, size), Image.BICUBIC), dtype=np.uint8)


@torch.no_grad()
def elbo_terms(beta: float, model, x: torch.Tensor) -> ElboTerms:
    gen = torch.Generator().manual_seed(SEED)
    out = model(x.expand(SAMPLES, -1, -1, -1), sample_posterior=True, generator=gen)
    recon = model.decode(out.posterior.mean[:1]).sample
    return ElboTerms(beta=beta, log_likelihood=-float(out.reconstruction_nll.mean()),
                     kl_per_dim=out.kl[0].numpy(), reconstruction=to_pil(recon))  # fmt: skip


def nearest_beta(betas: list[float], log2_beta: float) -> float:
    return min(betas, key=lambda b: abs(math.log2(b) - log2_beta))


def elbo_charts(terms: list[ElboTerms], chosen: ElboTerms) -> str:
    """KL per latent dimension of the chosen model, and the reconstruction-vs-KL trade-off across betas (SVG)."""
    kl = charts.bars(chosen.kl_per_dim.tolist(), f"KL per latent dimension, beta {chosen.beta:g} ({chosen.kl:.1f} nats)",
                     "latent dimension", "nats", color="#7c3aed")  # fmt: skip
    points = [(t.kl, -t.log_likelihood) for t in terms]
    trade = charts.lines({"beta-VAEs": points}, "the trade-off: reconstruction vs KL", "KL (nats)",
                         "-E_q[log p(x|z)] (nats)", highlight=(chosen.kl, -chosen.log_likelihood),
                         labels=[(t.kl, -t.log_likelihood, f"beta {t.beta:g}") for t in terms])  # fmt: skip
    return charts.row(kl, trade)


def elbo_view(beta_vaes: dict, image: np.ndarray, log2_beta: float) -> dict:
    """Everything the ELBO view shows for a ``(28, 28)`` uint8 image and the slider's ``log2(beta)``."""
    if not beta_vaes:
        raise ValueError("no beta-VAEs are loaded")
    x = fashion_tensor(image)
    terms = [elbo_terms(beta, model, x) for beta, model in beta_vaes.items()]
    chosen = next(t for t in terms if t.beta == nearest_beta(list(beta_vaes), log2_beta))
    active = int((chosen.kl_per_dim > 0.1).sum())
    text = (f"<p><b>beta = {chosen.beta:g}</b>: ELBO = E_q[log p(x|z)] - KL = {chosen.log_likelihood:.1f} - "
            f"{chosen.kl:.1f} = <b>{chosen.elbo:.1f} nats</b> ({-chosen.elbo / (x.numel() * math.log(2)):.3f} bits/pixel); "
            f"the training objective -log p + beta KL = {-chosen.log_likelihood + chosen.beta * chosen.kl:.1f}. "
            f"{active} of {len(chosen.kl_per_dim)} latent dimensions carry more than 0.1 nats.</p>")  # fmt: skip
    original = upscale(to_pil(x[0]), 168)
    strip = [(side_by_side(original, upscale(t.reconstruction, 168)),
              f"beta {t.beta:g}: -log p(x|z) = {-t.log_likelihood:.1f}, KL = {t.kl:.1f}, ELBO = {t.elbo:.1f}")
             for t in terms]  # fmt: skip
    return {"html": text, "figure": elbo_charts(terms, chosen), "gallery": strip, "chosen": chosen, "terms": terms,
            "pair": side_by_side(original, upscale(chosen.reconstruction, 168))}  # fmt: skip


def tab(models, ctx, demo) -> None:
    import gradio as gr

    from ..data.fashion_mnist import FASHION_MNIST_LABELS
    from .images import open_upload
    from .ui import handler

    with gr.Tab("ELBO", id="elbo"):
        if not models.beta_vaes or models.fashion is None:
            gr.Markdown("No beta-VAEs (or no Fashion-MNIST test images) are loaded.")
            return
        betas = list(models.beta_vaes)
        logs = [math.log2(b) for b in betas]
        gaps = {round(b - a, 6) for a, b in zip(logs, logs[1:])}
        low, high = (min(logs), max(logs)) if len(logs) > 1 else (logs[0] - 1, logs[0] + 1)
        gr.Markdown(f"ELBO = E_q[log p(x|z)] - KL(q(z|x) || N(0, I)) for one Fashion-MNIST test image, under the "
                    f"bundled beta-VAEs (beta = {', '.join(f'{b:g}' for b in betas)}; same architecture, trained "
                    "with the KL weighted by beta). **Move the beta slider** to see the trade-off.")  # fmt: skip
        with gr.Row():
            index = gr.Slider(0, len(models.fashion["images"]) - 1, value=0, step=1, label="test image",
                              elem_id="elbo-index")  # fmt: skip
            beta = gr.Slider(low, high, value=logs[len(logs) // 2], label="log2(beta)",
                             step=gaps.pop() if len(gaps) == 1 else 0.01, elem_id="elbo-beta")  # fmt: skip
            upload = gr.UploadButton(UPLOAD_LABEL, file_types=["image"], type="filepath", elem_id="elbo-upload")
        image = gr.State(models.fashion["images"][0])
        with gr.Row():
            pair = gr.Image(label="image | reconstruction (chosen beta)", interactive=False, elem_id="elbo-pair")
            text = gr.HTML(elem_id="elbo-text")
        figure = gr.HTML(elem_id="elbo-figure")
        gallery = gr.Gallery(object_fit="contain", label="every beta", columns=len(betas), height=260, elem_id="elbo-gallery")

    @handler
    def run(array, log2_beta):
        out = elbo_view(models.beta_vaes, array, float(log2_beta))
        return out["pair"], out["html"], out["figure"], out["gallery"]

    @handler
    def pick(i):
        i = int(i)
        return models.fashion["images"][i], gr.update(label=f"test image ({FASHION_MNIST_LABELS[int(models.fashion['labels'][i])]})")

    @handler
    def uploaded(path):
        return upload_to_fashion(open_upload(path))

    outputs = [pair, text, figure, gallery]
    index.change(pick, index, [image, index], trigger_mode="always_last").success(run, [image, beta], outputs)
    upload.upload(uploaded, upload, image).success(run, [image, beta], outputs)
    beta.change(run, [image, beta], outputs, trigger_mode="always_last")
    demo.load(run, [image, beta], outputs)
