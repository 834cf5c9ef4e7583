"""The model card (``README.md``) of a converted authors' checkpoint: provenance, licence, reported figures."""

from __future__ import annotations

from typing import Any

from .architectures import ORIGINAL_COMMIT, ORIGINAL_REPO, RELEASED_HUB_REPO, OriginalSpec

CITATION = """@article{liu2025coda,
  title     = {CODA: Repurposing Continuous VAEs for Discrete Tokenization},
  author    = {Liu, Zeyu and others},
    year      = {2025},
  journal   = {arXiv preprint arXiv:2503.17760}
}"""


def _front_matter(spec: OriginalSpec) -> str:
    tags = ["coda_hf", "image-tokenizer", "discrete-tokens", "coda", spec.title.lower()]
    return "\n".join(
        [
            "---",
            "library_name: coda_hf",
            "license: apache-2.0",
            "pipeline_tag: image-feature-extraction",
            "tags:",
        ]
        + [f"- {t}" for t in tags]
        + ["---"]
    )


def _figures(spec: OriginalSpec) -> str:
    p = spec.paper
    return (
        f"| rFID | PSNR | SSIM | codebook utilization | training |\n|---|---|---|---|---|\n"
        f"| {p['rfid']} | {p['psnr']} | {p['ssim']} | {p['utilization']}% | {p['train_iters']} iterations |"
    )


def render_card(spec: OriginalSpec, model: Any, sources: dict[str, tuple[str, str]], merged: bool) -> str:
    """Markdown model card. ``sources``: ``{"vae": (file name, sha256), "quantizer": (...)}``."""
    tokens = model.num_tokens(256, 256) if 256 % model.downsample_factor == 0 else "?"
    ema = all("_ema" in name for name, _ in sources.values())
    files = "\n".join(f"- `{name}` (sha256 `{digest}`)" for name, digest in sources.values())
    lora = (
        "fused into the VAE convolutions (`--merge-lora`)"
        if merged
        else f"rank {spec.lora_rank}, kept as peft adapters"
    )
    return f"""{_front_matter(spec)}

# {spec.title} (converted)

The {spec.title} discrete image tokenizer of CODA ("CODA: Repurposing Continuous VAEs for Discrete
Tokenization", Liu et al., arXiv 2503.17760), converted from the authors' released PyTorch state dicts to a
`coda_hf` `CodaVQModel` (safetensors) by `coda-hf convert-original --preset {spec.preset}`.
The conversion maps every key and changes no value; `coda_hf`'s tests check the converter against
golden outputs of the authors' code.

- Codebook: {spec.codebook_size:,} codes, {len(spec.scales)} multi-scale residual levels (scales
  {", ".join(map(str, spec.scales))}); {tokens} tokens per 256x256 image.
- VAE: {spec.base_vae}, with the authors' LoRA ({lora}).

## Where the weights come from

- Authors' code: {ORIGINAL_REPO} (commit `{ORIGINAL_COMMIT[:7]}`), licence Apache-2.0.
- Authors' released checkpoints: https://huggingface.co/{RELEASED_HUB_REPO} (folder `{spec.hub_folder}/`).
- Converted files{" (the EMA weights, which the authors' evaluation uses)" if ema else ""}:
{files}
- The base VAE weights inside come from {spec.base_vae}, as the authors' README says; that release's
  own licence terms apply to them.

## Reported by the authors

The authors' figures (paper Table 2, ImageNet 256x256 reconstruction) for {spec.title} with
{spec.codebook_size:,} codes. They were **not** measured by this conversion:

{_figures(spec)}

## Usage

```python
import coda_hf  # noqa: F401  (registers the transformers task)
from coda_hf import CodaVQModel

model = CodaVQModel.from_pretrained("path/or/repo").eval()
tokens = model.encode(images).token_ids   # images: (B, 3, 256, 256) in [-1, 1] -> (B, {tokens})
reconstruction = model.decode(tokens)
```

## Citation

```bibtex
{CITATION}
```
"""
