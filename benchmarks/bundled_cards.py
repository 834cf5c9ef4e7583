"""Model cards of the bundled photo models, written by ``benchmarks/train_bundled.py`` from measured values only.

:func:`collect_facts` reads what the run left in its workdir (data manifests, training configs, wall times,
thread counts, the validation choice, the eval metrics) plus the demo figures measured on the bundled
checkpoints; :func:`write_cards` renders one card per model; :func:`bundle_metrics` gives the figures that go
into each model's ``bundle.json`` (the tests compare ``coda-hf demo``'s output with them and with the cards).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

WORK_NAME, VAE_WORK_NAME = "runs/bundled", "runs/vae4x"  # how the cards name the two workdirs
COMMAND = f"python benchmarks/train_bundled.py --workdir {WORK_NAME} --vae-workdir {VAE_WORK_NAME}"
VAE_COMMAND = (f"python benchmarks/reproduce.py --workdir {VAE_WORK_NAME} --config cpu-latent16-offdomain "
               "--override '{\"vae_steps\": 9600}' --only data-vae vae vae-stats")  # fmt: skip
DEMO_KEYS = ("psnr", "ssim", "fd_effnet", "utilization")
EVAL_KEYS = ("psnr", "ssim", "fd_effnet", "utilization", "perplexity", "tokens_per_image", "num_images")


def _json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _relative(value, work: Path, vae_work: Path):
    """``value`` with the machine's workdir paths replaced by the names the cards use."""
    text = json.dumps(value).replace(str(work), WORK_NAME).replace(str(vae_work), VAE_WORK_NAME)
    return json.loads(text)


def _threads(invocations: list[dict], stage: str) -> str:
    runs = [i for i in invocations if stage in i["stages"]]
    return f"{runs[-1]['torch_threads']} torch thread(s) (OMP_NUM_THREADS={runs[-1]['omp_num_threads']})" if runs else "unrecorded"


def _data_summary(manifest: dict) -> dict:
    size = next(iter(manifest["splits"]))
    licences = sorted({p["license"] for p in manifest["photos"]})
    return {
        "tile_size": int(size), "splits": {s: v for s, v in manifest["splits"][size].items()},
        "validation_fraction": manifest["config"].get("validation_fraction", 0.0),
        "sources": manifest["sources"], "licences": licences,
        "photos": {s: sorted(p["photo_id"].split(":", 1)[1].rsplit("/", 1)[-1] for p in manifest["photos"] if p["split"] == s)
                   for s in manifest["splits"][size]},
    }  # fmt: skip


def collect_facts(work: Path, hw: dict, config_name: str, vae_work: Path, photos: Path, demo: dict) -> dict:
    """Everything the cards state, read from the run's files (paths made workdir-relative)."""
    from train_bundled import rate_name

    provenance = _json(work / "runs" / "vae" / "provenance.json") or {}
    lora = _json(work / "lora_choice.json")
    configs = {p.stem: yaml.safe_load(p.read_text()) for p in (work / "configs").glob("*.yaml")}
    facts = {
        "config_name": config_name, "hw": hw, "timings": _json(work / "timings.json") or {},
        "invocations": _json(work / "invocations.json") or [], "lora": lora,
        "chosen_run": rate_name(float(lora["chosen"])), "configs": configs,
        "data": _data_summary(_json(photos / "manifest.json")),
        "vae_data": _data_summary(provenance["data_manifest"]) if provenance.get("data_manifest") else None,
        "vae_wall_s": provenance.get("train_wall_s"), "vae_config": _json(work / "runs" / "vae" / "training_config.json"),
        "eval": {r: _json(work / "eval" / r / "metrics.json") for r in ("vae", "coda", "vqgan", "prior")},
        "demo": demo, "demo_photos": _json(work / "demo-photos" / "photos.json"),
    }  # fmt: skip
    return _relative(facts, work, vae_work)


def bits_per_pixel(tokens: float, codebook_size: int, tile: int) -> float:
    return tokens * math.log2(codebook_size) / (tile * tile)


def bundle_metrics(facts: dict, name: str) -> dict:
    """``{"eval_metrics": ..., "demo_metrics": ...}`` of a bundled model for its ``bundle.json``."""
    run = {"photos-vae": "vae", "photos-coda": "coda", "photos-vqgan": "vqgan", "photos-prior": "prior"}[name]
    ev = facts["eval"][run]
    if run == "prior":
        return {"eval_metrics": ev}
    out = {"eval_metrics": {k: ev[k] for k in EVAL_KEYS if k in ev}}
    out["demo_metrics"] = {k: facts["demo"][name][k] for k in DEMO_KEYS if k in facts["demo"][name]}
    return out


def _fmt(key: str, value) -> str:
    if key == "utilization":
        return f"{value:.2%}"
    if key in ("num_images", "tokens_per_image", "samples", "eval_tiles", "train_tiles"):
        return f"{value:,.0f}"
    if key == "ssim":
        return f"{value:.4f}"
    return f"{value:.2f}"


def metrics_table(rows: dict[str, dict], keys: tuple[str, ...]) -> list[str]:
    """A markdown table: one row per entry of ``rows``, the ``keys`` present in any row."""
    keys = tuple(k for k in keys if any(k in r for r in rows.values()))
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(k, row[k]) if k in row else "-" for k in keys) + " |")
    return lines


def _data_lines(facts: dict) -> list[str]:
    d = facts["data"]
    sources = ", ".join(f"{s} {v['package_version']} ({v['photos']} photos)" for s, v in d["sources"].items())
    splits = "; ".join(f"{s}: {v['tiles']:,} tiles of {d['tile_size']} px from {v['photos']} photos" for s, v in d["splits"].items())
    return [
        f"**Data** (`python tools/prepare_data.py prepare-photos --sources {' '.join(d['sources'])} --validation-fraction "
        f"{d['validation_fraction']}`): {sources}; split by scene, no scene in two splits: {splits}.",
        f"Eval photos: {', '.join(d['photos']['eval'])}. Validation photos: {', '.join(d['photos']['validation'])}.",
        f"Licences of the photos: {'; '.join(d['licences'])} (per photo in the set's manifest.json).",
    ]


def _run_lines(facts: dict, stage: str, what: str) -> list[str]:
    seconds = facts["timings"].get(stage)
    wall = f"{seconds:,.0f} s ({seconds / 60:.1f} min)" if seconds else "unrecorded"
    return [f"**{what}**: stage `{stage}` of `{COMMAND}`; wall time {wall} on {_threads(facts['invocations'], stage)}, "
            "the machine shared with other jobs. Its training config:", "", "```yaml",
            yaml.safe_dump(facts["configs"][stage], sort_keys=True).rstrip(), "```"]  # fmt: skip



def _metric_sections(facts: dict, names: dict[str, str]) -> list[str]:
    """The held-out (eval split) and demo-photo tables of the models ``names`` (bundled name -> run)."""
    ev = {n: {k: facts["eval"][r][k] for k in EVAL_KEYS if k in facts["eval"][r]} for n, r in names.items()}
    for n, r in names.items():
        if "tokens_per_image" in ev[n]:
            ev[n]["bits_per_pixel"] = bits_per_pixel(ev[n]["tokens_per_image"], facts["eval"][r]["codebook_size"],
                                                     facts["data"]["tile_size"])  # fmt: skip
    photos = facts["demo_photos"]["photos"]
    demo = {n: facts["demo"][n] for n in names}
    return [
        "## Held-out metrics", "",
        f"`coda-hf evaluate` on every tile of the EVAL split ({facts['data']['splits']['eval']['tiles']:,} tiles of "
        f"{facts['data']['tile_size']} px), once, after every choice was made on the validation split. FD-EffNet: "
        "Fréchet distance on EfficientNet-Lite0 features, NOT comparable with Inception FID; bits_per_pixel: tokens x "
        "log2(codebook) / pixels.", "",
        *metrics_table(ev, (*EVAL_KEYS, "bits_per_pixel")), "",
        "## Demo photos", "",
        f"What `coda-hf demo` prints for these models on the {len(photos)} bundled EVAL photos at 256 px "
        f"({', '.join(p['file'] for p in photos)}): mean PSNR / SSIM per photo, FD-EffNet over their 64 px tiles, "
        "codebook utilization of their tokens (coda_hf.demo.reconstruction_metrics; tests/test_demo.py checks "
        "that the demo reproduces these figures).", "",
        *metrics_table(demo, DEMO_KEYS), "",
    ]  # fmt: skip


def _use(lines: list[str]) -> list[str]:
    return ["## Use", "", "```python", "import coda_hf", *lines, "```", ""]


def _vae_card(facts: dict) -> list[str]:
    vd, cfg = facts["vae_data"], facts["vae_config"] or {}
    wall = facts["vae_wall_s"]
    sources = ", ".join(f"{s} {v['package_version']} ({v['photos']} photos)" for s, v in vd["sources"].items())
    return [
        *_use(["from diffusers import AutoencoderKL", "", 'vae = AutoencoderKL.from_pretrained(coda_hf.bundled_model("photos-vae"))']),
        "## Training", "",
        f"Stage 0 of the reproduction, trained on OTHER photos than the tokenizers' (the paper's off-the-shelf VAE): "
        f"`{VAE_COMMAND}`, then copied by `{COMMAND}` (stage `vae`).", "",
        f"**Data**: {sources}: {vd['splits']['train']['tiles']:,} train tiles of {vd['tile_size']} px; licences "
        f"{'; '.join(vd['licences'])}.", "",
        f"**Recipe**: AutoencoderKL {cfg.get('model_kwargs', {}).get('block_out_channels')}, "
        f"{cfg.get('model_kwargs', {}).get('latent_channels')} latent channels (factor 4), {cfg.get('max_train_steps'):,} "
        f"steps at batch {cfg.get('train_batch_size')}, AdamW {cfg.get('learning_rate')} cosine, L1 {cfg.get('l1_weight')} "
        f"+ L2 {cfg.get('l2_weight')} + EfficientNet perceptual {cfg.get('perceptual_weight')} + KL {cfg.get('kl_beta')}; "
        f"wall time {wall:,.0f} s ({wall / 3600:.2f} h) on 1 torch thread (OMP_NUM_THREADS=1), the machine shared "
        "with other jobs. Latent shift / scale: `coda-hf latent-stats --write` on its own training tiles.", "",
    ]  # fmt: skip


def _lora_lines(facts: dict) -> list[str]:
    lora = facts["lora"]
    rows = {f"LoRA rate {r}" + (" (chosen)" if r == lora["chosen"] else ""): v for r, v in lora["validation"].items()}
    return [f"**LoRA rate, chosen on the VALIDATION split** ({lora['rule']}; `coda-hf evaluate --split validation`, "
            f"{next(iter(lora['validation'].values()))['num_images']} tiles):", "",
            *metrics_table(rows, ("psnr", "ssim", "fd_effnet", "utilization")), ""]  # fmt: skip


def _layout_line(hw: dict) -> str:
    side, tile = hw["scales"][-1], hw["tile_size"]
    tokens, bits = sum(s * s for s in hw["scales"]), math.log2(hw["codebook_size"])
    big = 4 * tile
    return (f"{len(hw['scales'])} levels {hw['scales']} on the {side} x {side} x {hw['latent_channels']} latent of a "
            f"{tile} px tile: {tokens:,} tokens of {hw['codebook_size']:,} codes ({bits:g} bits), "
            f"{bits_per_pixel(tokens, hw['codebook_size'], tile):.3f} bits per pixel. Larger images (sides multiples of "
            f"{tile} px) are encoded and decoded whole by the VAE and quantized tile by tile (`latent_tile_size: "
            f"{hw['latent_tile']}`): a {big} px photo is 16 tiles x {tokens:,} = {16 * tokens:,} tokens, the same bits "
            "per pixel; each level's index map is the mosaic of the tiles' maps (layout: coda_hf.models.tokenizer_mixin).")  # fmt: skip


def _coda_card(facts: dict) -> list[str]:
    hw = facts["hw"]
    return [
        *_use(["", 'model = coda_hf.CodaVQModel.from_pretrained(coda_hf.bundled_model("photos-coda"))',
               "# or: coda-hf tokenize IMG / coda-hf reconstruct IMG --output-dir OUT (the default model)"]),
        "## Token layout", "", _layout_line(facts["hw"]), "",
        "## Training", "", *_data_lines(facts), "",
        f"**Recipe** (the reproduction's `cpu-latent16-offdomain`): frozen photos-vae, multi-scale residual attention "
        f"quantizer ({hw['codebook_size']:,} codes shared by the levels, k-means data init from "
        f"{hw['data_init_images']:,} training crops, codebook kept as initialised), rank-8 LoRA on the decoder convs "
        f"(merged into the weights here), {hw['steps']} steps at batch {hw['batch_size']}, L1 1.0 + L2 1.0 + perceptual "
        f"0.25, no GAN. One run per LoRA rate in {hw['lora_rates']}.", "",
        *_lora_lines(facts), *_run_lines(facts, facts["chosen_run"], "The chosen run"), "",
    ]  # fmt: skip


def _vqgan_card(facts: dict) -> list[str]:
    hw = facts["hw"]
    return [
        *_use(["", 'vqgan = coda_hf.VQGANModel.from_pretrained(coda_hf.bundled_model("photos-vqgan"))']),
        "## Training", "", *_data_lines(facts), "",
        f"**Recipe**: the from-scratch baseline at matched bits: the VAE's widths {hw['widths']}, 16 latent channels, "
        f"16-d codes, multi-scale residual VQ with photos-coda's scales and codebook ({hw['codebook_size']:,} codes, "
        f"680 tokens per 64 px tile) with dead-code restarts ({hw['vq']}), {hw['vqgan_factor']}x CODA's steps "
        f"({hw['vqgan_factor'] * hw['steps']:,}) at batch {hw['batch_size']}, AdamW {hw['learning_rate']}, the same "
        "objective. Its hyperparameters were not tuned further (see issue 21's fair reproduction).", "",
        *_run_lines(facts, "vqgan", "Run"), "",
    ]  # fmt: skip


def _prior_card(facts: dict) -> list[str]:
    ev = facts["eval"]["prior"]
    return [
        *_use(["", 'pipe = coda_hf.CodaMaskGitPipeline.from_pretrained(coda_hf.bundled_model("photos-prior"))',
               "tiles = pipe(batch_size=4, num_inference_steps=8).images  # 64 px PIL images"]),
        "## Training", "",
        f"MaskGIT prior (bidirectional transformer, per-level positional embeddings) over photos-coda's 680 tokens of "
        f"each TRAIN tile ({facts['data']['splits']['train']['tiles']:,} tiles of 64 px; stage `prior-tiles`), "
        "unconditional (one class), cosine mask schedule.", "", *_run_lines(facts, "prior", "Run"), "",
        "## Held-out metrics", "",
        f"{ev['samples']} samples ({ev['num_inference_steps']} steps, guidance {ev['guidance_scale']}, seed {ev['seed']}) "
        f"against the {ev['eval_tiles']} EVAL tiles: FD-EffNet {ev['fd_effnet_samples_vs_eval']:.2f} (the train tiles "
        f"against the same eval tiles: {ev['fd_effnet_train_vs_eval']:.2f}, the data's own gap). Masked-token "
        f"cross-entropy on the eval tiles' tokens {ev['eval_masked_token']['cross_entropy']:.3f} nats (accuracy "
        f"{ev['eval_masked_token']['accuracy']:.2%}); on the train tiles' {ev['train_masked_token']['cross_entropy']:.3f} "
        f"nats ({ev['train_masked_token']['accuracy']:.2%}); {ev['eval_masked_token'].get('mask_draws_per_image', ev['eval_masked_token'].get('mask_draws_per_tile'))} seeded "
        f"mask draws per tile; log({facts['hw']['codebook_size']}) = {math.log(facts['hw']['codebook_size']):.3f} nats "
        "is a uniform guess.", "",
        "A small prior trained for minutes on one core: its samples are textures with the photos' colours, not scenes.", "",
    ]  # fmt: skip


CARDS = {
    "photos-vae": ("the continuous photo VAE", _vae_card, {"photos-vae": "vae"}),
    "photos-coda": ("the CODA photo tokenizer", _coda_card, {"photos-vae": "vae", "photos-coda": "coda", "photos-vqgan": "vqgan"}),
    "photos-vqgan": ("the from-scratch multi-scale VQGAN", _vqgan_card, {"photos-coda": "coda", "photos-vqgan": "vqgan"}),
    "photos-prior": ("the MaskGIT prior over photos-coda's tokens", _prior_card, {}),
}  # fmt: skip


def write_cards(facts: dict, out: Path) -> list[Path]:
    """One markdown card per photo model in ``out``; returns their paths."""
    from bundled_stages import DESCRIPTIONS

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (title, body, compared) in CARDS.items():
        lines = [f"# {name}: {title}", "", f"Bundled with coda_hf: {DESCRIPTIONS[name]}.", "", *body(facts)]
        if compared:
            lines += _metric_sections(facts, compared)
        lines += ["Written by `benchmarks/train_bundled.py` (stage `bundle`) from the measured values; do not edit."]
        paths.append(out / f"{name}.md")
        paths[-1].write_text("\n".join(lines) + "\n")
    return paths
