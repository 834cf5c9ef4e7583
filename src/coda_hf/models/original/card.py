"""The model card (``README.md``) of a converted authors' checkpoint: provenance, licence, reported figures."""

from __future__ import annotations

from .architectures import ORIGINAL_COMMIT, ORIGINAL_REPO, RELEASED_HUB_REPO, OriginalSpec

CITATION = """@article{liu2025coda,
  title   = {CODA: Repurposing Continuous VAEs for Discrete Tokenization},
  author  = {Liu, Zeyu and others},
  journal = {arXiv preprint arXiv:2503.17760},
  year    = {2025}
}"""

FRONT_MATTER = """---
library_name: coda_hf
license: apache-2.0
pipeline_tag: image-feature-extraction
tags:
- coda_hf
- image-tokenizer
- discrete-tokens
- coda
---"""


def _reported(spec: OriginalSpec, released: bool) -> str:
    """The authors' figures for a released model; a note for a checkpoint of another size."""
    if not released:
        return (
            "## Not a released model\n\nThis checkpoint was converted with architecture overrides (a size the "
            "authors' code can train but did not release), so the paper's figures do not apply to it."
        )
    p = spec.paper
    return (
        f"## Reported by the authors\n\nThe authors' figures (paper Table 2, ImageNet 256x256 reconstruction) for "
        f"{spec.title} with {spec.codebook_size:,} codes. They were **not** measured by this conversion:\n\n"
        "| rFID | PSNR | SSIM | codebook utilization | training |\n|---|---|---|---|---|\n"
        f"| {p['rfid']} | {p['psnr']} | {p['ssim']} | {p['utilization']}% | {p['train_iters']} iterations |"
    )


def _provenance(spec: OriginalSpec, sources: dict[str, tuple[str, str]]) -> str:
    ema = all("_ema" in name for name, _ in sources.values())
    files = "\n".join(f"  - `{name}` (sha256 `{digest}`)" for name, digest in sources.values())
    return (
        f"## Where the weights come from\n\n"
        f"- Authors' code: {ORIGINAL_REPO} (commit `{ORIGINAL_COMMIT[:7]}`), licence Apache-2.0.\n"
        f"- Authors' released checkpoints: https://huggingface.co/{RELEASED_HUB_REPO} (folder `{spec.hub_folder}/`).\n"
        f"- Converted files{' (the EMA weights, which the authors evaluate)' if ema else ''}:\n{files}\n"
        f"- The base VAE weights inside come from {spec.base_vae}, as the authors' README says; that "
        "release's own licence terms apply to them."
    )


def render_card(
    spec: OriginalSpec, sources: dict[str, tuple[str, str]], tokens: int, merged: bool, released: bool
) -> str:
    """Markdown model card.

    ``sources``: ``{"vae": (file name, sha256), "quantizer": (...)}``; ``tokens``: tokens per 256x256 image;
    ``merged``: LoRA fused; ``released``: the preset's architecture as released (no overrides).
    """
    lora = "fused into the VAE convolutions" if merged else f"rank {spec.lora_rank}, kept as peft adapters"
    return f"""{FRONT_MATTER}

# {spec.title} (converted)

The {spec.title} discrete image tokenizer of CODA ("CODA: Repurposing Continuous VAEs for Discrete
Tokenization", Liu et al., arXiv 2503.17760), converted from the authors' PyTorch state dicts to a
`coda_hf` `CodaVQModel` (safetensors) by `coda-hf convert-original --preset {spec.preset}`. The
conversion maps every key and changes no value; `coda_hf`'s tests check the converter against golden
outputs of the authors' code.

- Codebook: {spec.codebook_size:,} codes; {len(spec.scales)} multi-scale residual levels (scales
  {", ".join(map(str, spec.scales))}); {tokens:,} tokens per 256x256 image.
- VAE: {spec.base_vae}, with the authors' LoRA ({lora}).

{_provenance(spec, sources)}

{_reported(spec, released)}

## Usage

```python
from coda_hf.models import CodaVQModel

model = CodaVQModel.from_pretrained("path/or/repo").eval()
tokens = model.encode(images).token_ids   # images: (B, 3, 256, 256) in [-1, 1] -> (B, {tokens})
reconstruction = model.decode(tokens)
```

## Citation

```bibtex
{CITATION}
```
"""
