"""Random stand-ins for the app's photo models, for tests and latency measurements without trained weights.

:func:`save_standin_models` saves what the bundled ``photos-*`` models are (a continuous ``AutoencoderKL``, a
``CodaVQModel`` adapted from it with LoRA (its codebook data-initialised on smooth random images), a multi-scale ``VQGANModel`` and a ``CodaMaskGitPipeline`` over the
CODA tokens) with random weights, so ``coda_hf.app.AppModels.load(**dirs)`` runs every view on them exactly
as on trained models. ``size="tiny"``: 32 px images, a few thousand parameters; ``"medium"``: 256 px images
through an 8x VAE (16 latent channels, CODA-FLUX's 10 scales, 2,240 tokens, 4,096 codes).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL

from ..maskgit import MaskGitConfig, MaskGitScheduler, MaskGitTransformer
from ..models import CodaVQModel, VQGANModel
from ..models.presets import coda_quantizer
from ..pipelines.maskgit import CodaMaskGitPipeline

STANDIN_SIZES = {
    "tiny": {"resolution": 32, "widths": (8, 16), "latent_channels": 4, "groups": 4, "scales": [1, 2, 4, 8, 16],
             "codebook_size": 32, "lora_rank": 2, "prior_hidden": 32, "prior_layers": 2},
    "medium": {"resolution": 256, "widths": (32, 64, 64, 64), "latent_channels": 16, "groups": 16,
               "scales": [1, 2, 3, 4, 6, 9, 13, 18, 24, 32], "codebook_size": 4096, "lora_rank": 8,
               "prior_hidden": 128, "prior_layers": 2},
}  # fmt: skip


def _vae(spec: dict) -> AutoencoderKL:
    n = len(spec["widths"])
    return AutoencoderKL(
        block_out_channels=spec["widths"], down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, latent_channels=spec["latent_channels"],
        norm_num_groups=spec["groups"], sample_size=spec["resolution"], layers_per_block=1,
    ).eval()  # fmt: skip


def _perturb_lora(model: CodaVQModel, generator: torch.Generator, std: float = 0.05) -> None:
    """``lora_B`` starts at zero; random values make the adapters change the output, as trained ones do."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * std)


def build_standin_models(size: str = "tiny", seed: int = 0) -> dict:
    """The four photo models with random weights: ``{"vae", "coda", "vqgan", "prior"}``."""
    if size not in STANDIN_SIZES:
        raise ValueError(f"size must be one of {sorted(STANDIN_SIZES)}; got {size!r}")
    spec = STANDIN_SIZES[size]
    torch.manual_seed(seed)
    vae = _vae(spec)
    quantizer = coda_quantizer(spec["scales"], spec["codebook_size"], init="data")
    coda = CodaVQModel.from_vae(vae, quantizer=quantizer, lora={"rank": spec["lora_rank"]}).eval()
    _perturb_lora(coda, torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():  # codes drawn from latents of smooth random images, as a data initialisation does
        gen = torch.Generator().manual_seed(seed + 2)
        low = torch.rand(8, 3, 4, 4, generator=gen) * 2 - 1
        images = torch.nn.functional.interpolate(low, size=(spec["resolution"],) * 2, mode="bicubic").clamp(-1, 1)
        coda.quantizer.initialize(coda.encode_latents(images), generator=gen)
    vq = {"name": "multiscale", "scales": spec["scales"], "quantizer": "vq",
          "quantizer_kwargs": {"codebook_size": spec["codebook_size"]}}  # fmt: skip
    vqgan = VQGANModel(block_out_channels=spec["widths"], layers_per_block=1, norm_num_groups=spec["groups"],
                       latent_channels=spec["latent_channels"], embed_dim=spec["latent_channels"],
                       mid_block_add_attention=False, quantizer=vq).eval()  # fmt: skip
    side = spec["resolution"]
    config = MaskGitConfig(
        level_shapes=[list(s) for s in coda.level_shapes(side, side)], codebook_size=spec["codebook_size"],
        num_classes=4, hidden_size=spec["prior_hidden"], num_hidden_layers=spec["prior_layers"],
        num_attention_heads=4, intermediate_size=2 * spec["prior_hidden"], hidden_dropout_prob=0.0,
        attention_dropout_prob=0.0,
    )  # fmt: skip
    prior = CodaMaskGitPipeline(tokenizer=coda, transformer=MaskGitTransformer(config).eval(), scheduler=MaskGitScheduler())
    return {"vae": vae, "coda": coda, "vqgan": vqgan, "prior": prior}


def save_standin_models(out_dir: str | Path, size: str = "tiny", seed: int = 0) -> dict[str, str]:
    """:func:`build_standin_models`, saved with ``save_pretrained`` under ``out_dir``; returns slot -> directory."""
    out = Path(out_dir)
    dirs = {}
    for slot, model in build_standin_models(size, seed).items():
        dirs[slot] = str(out / slot)
        model.save_pretrained(dirs[slot])
    return dirs
