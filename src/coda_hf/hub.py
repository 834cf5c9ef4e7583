"""Publishing tokenizers, priors and pipelines to the Hugging Face Hub, with a model card.

``push_to_hub(model_or_dir, "org/name")`` stages a copy of the model directory (or saves the
model object into a staging directory), renders the model card from the templates in
``coda_hf/model_cards/`` (``model_cards/`` at the repository root), creates the repository and
uploads it in one commit. The user's own files are never written to, so a rejected push leaves
them exactly as they were.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TOKENIZER_CLASSES = ("CodaVQModel", "VQGANModel", "AutoencoderKL")
PRIOR_MODEL_TYPES = ("coda_maskgit",)


class HubPushError(RuntimeError):
    """A push to the Hub was rejected or interrupted; nothing local was modified."""


def detect_kind(model_dir: str | Path) -> str:
    """``"pipeline"`` (model_index.json), ``"prior"`` (MaskGIT config) or ``"tokenizer"``."""
    model_dir = Path(model_dir)
    if (model_dir / "model_index.json").is_file():
        return "pipeline"
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{model_dir} has neither model_index.json nor config.json: not a saved model")
    config = json.loads(config_path.read_text())
    if config.get("model_type") in PRIOR_MODEL_TYPES:
        return "prior"
    if config.get("_class_name") in TOKENIZER_CLASSES or config.get("model_type") == "coda_vq":
        return "tokenizer"
    raise ValueError(f"{config_path} describes neither a coda_hf tokenizer nor a MaskGIT prior")


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _find_training_config(model_dir: Path) -> dict | None:
    for name in ("training_config.json",):
        found = _read_json(model_dir / name)
        if found is not None:
            return found
    return None


def _metrics_rows(metrics: dict) -> list[tuple[str, float]]:
    """The scalar metrics worth a model-index entry, in a stable order."""
    keys = ("rfid", "fd_effnet", "psnr", "ssim", "utilization", "perplexity", "tokens_per_image")
    return [(k, float(metrics[k])) for k in keys if isinstance(metrics.get(k), (int, float))]


def build_model_card(
    model_dir: str | Path,
    repo_id: str,
    *,
    metrics: dict | str | Path | None = None,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    license: str = "apache-2.0",
    dataset_name: str | None = None,
):
    """Render the model card (a ``huggingface_hub.ModelCard``) for a saved tokenizer, prior or pipeline.

    ``metrics`` is ``coda-hf evaluate``'s ``metrics.json`` (a dict or its path); when omitted, a
    ``metrics.json`` inside ``model_dir`` is used if present. ``base_model`` defaults to the
    source VAE recorded in the training configuration.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    model_dir = Path(model_dir)
    kind = detect_kind(model_dir)
    if isinstance(metrics, (str, Path)):
        metrics = json.loads(Path(metrics).read_text())
    if metrics is None:
        metrics = _read_json(model_dir / "metrics.json")
    training_config = _find_training_config(model_dir)
    if base_model is None and training_config:
        base_model = training_config.get("pretrained_vae") or training_config.get("pretrained_model")
    if datasets is None and training_config and training_config.get("dataset_name"):
        datasets = [training_config["dataset_name"]]

    if kind == "pipeline":
        index = json.loads((model_dir / "model_index.json").read_text())
        model_class = index.get("_class_name", "CodaMaskGitPipeline")
        prior_config = _read_json(model_dir / "transformer" / "config.json") or {}
        tokenizer_config = _read_json(model_dir / "tokenizer" / "config.json") or {}
    elif kind == "prior":
        model_class, prior_config, tokenizer_config = "MaskGitTransformer", json.loads((model_dir / "config.json").read_text()), {}
    else:
        tokenizer_config = json.loads((model_dir / "config.json").read_text())
        model_class, prior_config = tokenizer_config.get("_class_name", "CodaVQModel"), {}

    eval_results = None
    metrics_table = None
    if metrics:
        rows = _metrics_rows(metrics)
        ds = dataset_name or metrics.get("dataset") or (datasets[0] if datasets else "custom")
        eval_results = [
            EvalResult(task_type="image-tokenization", task_name="Image reconstruction", dataset_type=str(ds),
                       dataset_name=str(ds), metric_type=k, metric_name=k, metric_value=v)
            for k, v in rows
        ] or None
        metrics_table = "| metric | value |\n|---|---|\n" + "\n".join(f"| {k} | {v:.4g} |" for k, v in rows)

    is_tokenizer = kind == "tokenizer"
    # The Hub has no "image tokenization" task tag; generation cards use the generation tag.
    card_data = ModelCardData(
        library_name="coda_hf",
        pipeline_tag="image-feature-extraction" if is_tokenizer else "unconditional-image-generation",
        license=license,
        base_model=base_model,
        datasets=datasets,
        tags=["coda_hf", "image-tokenizer" if is_tokenizer else "maskgit"]
        + ([] if tokenizer_config.get("_class_name") == "AutoencoderKL" else ["discrete-tokens"]),
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results,
    )
    quantizer = tokenizer_config.get("quantizer") or {}
    levels = len(quantizer.get("scales", [])) or quantizer.get("num_levels")
    level_shapes = prior_config.get("level_shapes") or []
    template = resources.files("coda_hf").joinpath("model_cards", "tokenizer.md" if is_tokenizer else "prior.md")
    with resources.as_file(template) as template_path:
        return ModelCard.from_template(
            card_data,
            template_path=str(template_path),
            model_name=repo_id.split("/")[-1],
            repo_id=repo_id,
            model_class=model_class,
            base_model=base_model,
            quantizer_name=quantizer.get("name", "?"),
            codebook_size=quantizer.get("codebook_size", prior_config.get("codebook_size", "?")),
            levels=levels,
            downsample_factor=2 ** (len(tokenizer_config.get("vae_config", {}).get("block_out_channels", [0, 0, 0, 0])) - 1)
            if "vae_config" in tokenizer_config
            else 2 ** (len(tokenizer_config.get("block_out_channels", [0, 0, 0, 0])) - 1),
            tokens_per_image=(metrics or {}).get("tokens_per_image") or sum(h * w for h, w in level_shapes) or None,
            resolution=(metrics or {}).get("resolution", "?"),
            num_classes=prior_config.get("num_classes", "?"),
            is_pipeline=kind == "pipeline",
            is_continuous=model_class == "AutoencoderKL",
            metrics_table=metrics_table,
            training_config=json.dumps(training_config, indent=2, sort_keys=True) if training_config else None,
        )


def push_to_hub(
    model_or_dir: Any,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    commit_message: str | None = None,
    metrics: dict | str | Path | None = None,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    license: str = "apache-2.0",
    revision: str | None = None,
) -> str:
    """Publish a tokenizer, prior or whole pipeline (object or saved directory) with its model card.

    ``private=None`` keeps the Hub's default (your organisation's setting); ``endpoint`` points at another
    Hub deployment (default: ``HF_ENDPOINT`` or huggingface.co). Returns the commit URL. Raises :class:`HubPushError` (status code and message included) when
    the Hub rejects the push or the connection drops; the local files are left untouched.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id must look like 'org/name'; got {repo_id!r}")
    with tempfile.TemporaryDirectory(prefix="coda_hf_push_") as tmp:
        staging = Path(tmp) / "repo"
        if isinstance(model_or_dir, (str, Path)):
            source = Path(model_or_dir)
            if not source.is_dir():
                raise FileNotFoundError(f"model directory {source} does not exist")
            # not a training run's lock file (training/run_lock.py) or an interrupted checkpoint save
            shutil.copytree(source, staging, ignore=shutil.ignore_patterns(".training.lock", ".checkpoint-*"))
        elif hasattr(model_or_dir, "save_pretrained"):
            model_or_dir.save_pretrained(staging)
        else:
            raise TypeError(f"push_to_hub takes a directory or an object with save_pretrained; got {type(model_or_dir).__name__}")
        card = build_model_card(staging, repo_id, metrics=metrics, base_model=base_model, datasets=datasets, license=license)
        card.save(staging / "README.md")
        api = HfApi(endpoint=endpoint, token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(
                folder_path=staging,
                repo_id=repo_id,
                revision=revision,
                commit_message=commit_message or f"Upload {detect_kind(staging)} with coda_hf",
            )
        except HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else "?"
            raise HubPushError(
                f"pushing {model_or_dir if isinstance(model_or_dir, (str, Path)) else 'the model'} to {repo_id} "
                f"was rejected (HTTP {status}): {e}. Local files were not modified."
            ) from e
        except (OSError, ConnectionError) as e:
            raise HubPushError(f"pushing to {repo_id} failed ({type(e).__name__}: {e}). Local files were not modified.") from e
        except Exception as e:
            # httpx transport errors (a dropped connection) are not OSError subclasses.
            if type(e).__module__.startswith(("httpx", "httpcore", "requests", "urllib3")):
                raise HubPushError(
                    f"pushing to {repo_id} failed ({type(e).__name__}: {e}). Local files were not modified."
                ) from e
            raise
    logger.info("pushed %s to %s", model_or_dir, repo_id)
    return str(info)
