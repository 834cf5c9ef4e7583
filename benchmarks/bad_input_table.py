"""Try every kind of bad input on tiny models and write what happens as a markdown table (docs/bad-input.md).

Cases: images (``encode``, the ``image-tokenization`` pipeline, ``load_image``), token ids (``decode``),
model directories (``from_pretrained`` of the wrong class, missing weights, pickle-only weights with a planted
payload, missing paths), configs, training inputs and the CLI (outputs that exist, are folders or cannot
be written, equal file names, token files, unreadable images). Each case states the outcome it must have
(a clean, named error or a correct result); ``tests/test_bad_input_table.py`` runs the same ``CASES``.

Everything runs offline (``HF_HUB_OFFLINE=1``) in a temporary folder; URLs are served by a local
``http.server`` thread.

    python benchmarks/bad_input_table.py --output docs/bad-input.md
    python benchmarks/bad_input_table.py --only cli --output /tmp/cli.md
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import io
import json
import os
import re
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported: no Hub, ever
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

MARKER = "PICKLE_PAYLOAD_RAN"  # a planted pickle would create this file


# ------------------------------------------------------------------------------------ the sandbox
class _Payload:
    """Unpickling this runs ``open(marker, "w")``: the stand-in for an attacker's code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant_pickle(folder: Path, name: str, marker: Path) -> Path:
    import pickle

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "wb") as f:
        pickle.dump({"weight": _Payload(str(marker))}, f)
    return folder / name


def _image(path: Path, size=(32, 40), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


class Sandbox:
    """Tiny models, images and folders for the cases, built once in ``root``."""

    def __init__(self, root: Path):
        from diffusers import AutoencoderKL

        from coda_hf.maskgit import MaskGitConfig, MaskGitTransformer
        from coda_hf.models import CodaVQModel, VQGANModel

        self.root = root
        torch.manual_seed(0)
        vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                            sample_size=32)  # fmt: skip
        vae.save_pretrained(root / "vae")
        quantizer = {"name": "multiscale", "scales": [1, 2, 4], "quantizer": "attention",
                     "quantizer_kwargs": {"codebook_size": 32}}  # fmt: skip
        self.coda = CodaVQModel.from_vae(vae, quantizer=quantizer, lora={"rank": 2}).eval()
        self.coda.save_pretrained(root / "coda")
        other = {**quantizer, "quantizer_kwargs": {"codebook_size": 16}}
        CodaVQModel.from_vae(vae, quantizer=other, lora={"rank": 0}).save_pretrained(root / "coda16")
        VQGANModel(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8, latent_channels=4,
                   embed_dim=4, quantizer={"name": "vq", "codebook_size": 16}).save_pretrained(root / "vqgan")  # fmt: skip
        prior = MaskGitTransformer(MaskGitConfig(codebook_size=32, level_shapes=[[1, 1], [2, 2]], hidden_size=16,
                                                 num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                                 num_classes=2))  # fmt: skip
        prior.save_pretrained(root / "prior")
        self.marker = root / MARKER
        _plant_pickle(root / "pickle_diffusers", "diffusion_pytorch_model.bin", self.marker)
        (root / "pickle_diffusers" / "config.json").write_text((root / "coda" / "config.json").read_text())
        _plant_pickle(root / "pickle_transformers", "pytorch_model.bin", self.marker)
        (root / "pickle_transformers" / "config.json").write_text((root / "prior" / "config.json").read_text())
        self._partial_checkpoint(root / "coda_partial")
        self.images = root / "images"
        self.good = [_image(self.images / "a.png"), _image(self.images / "b.png", (36, 40), 1)]
        self.truncated = self.images / "truncated.png"
        self.truncated.write_bytes(self.good[0].read_bytes()[:200])
        self.text = self.images / "notes.png"
        self.text.write_text("not an image")

    def _partial_checkpoint(self, folder: Path) -> None:
        """The CODA checkpoint with the quantizer's weights cut out."""
        import shutil

        from safetensors.torch import load_file, save_file

        shutil.copytree(self.root / "coda", folder)
        weights = folder / "diffusion_pytorch_model.safetensors"
        state = {k: v for k, v in load_file(str(weights)).items() if not k.startswith("quantizer.")}
        save_file(state, str(weights))

    def path(self, name: str) -> str:
        return str(self.root / name)

    def fresh(self, name: str) -> Path:
        """A new, empty folder for one case."""
        folder = self.root / "cases" / name
        folder.mkdir(parents=True, exist_ok=False)
        return folder

    @functools.cached_property
    def pipeline(self):
        import transformers

        import coda_hf.transformers_integration  # noqa: F401  (registers the task)

        return transformers.pipeline(task="image-tokenization", model=self.path("coda"))

    @contextlib.contextmanager
    def http_server(self):
        """``http://127.0.0.1:PORT`` serving ``images/``."""
        handler = functools.partial(_QuietHandler, directory=str(self.images))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request log on stderr
        pass


# ------------------------------------------------------------------------------------ running a case
@dataclass(frozen=True)
class Case:
    """One bad input: ``run(sandbox)`` returns a short text on success or raises; ``expect`` is a regex
    the outcome (``"ExceptionType: message"``, ``"exit N: stderr"`` or the returned text) must match."""

    group: str
    input: str
    run: Callable[[Sandbox], str]
    expect: str


def outcome(case: Case, sandbox: Sandbox) -> str:
    """The case's outcome as one line (see :class:`Case`)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            text = case.run(sandbox)
    except Exception as e:  # the outcome IS the exception
        text = f"{type(e).__name__}: {e}"
    if sandbox.marker.exists():  # a case that runs a planted pickle fails whatever it returned
        sandbox.marker.unlink()
        text = f"PICKLE EXECUTED ({text})"
    return " ".join(text.replace(str(sandbox.root), "SANDBOX").split())


def cli(sandbox: Sandbox, *argv: str) -> str:
    """Run ``coda-hf argv`` in-process: ``"exit N: <stderr>"`` (``"exit 0"`` when it is silent)."""
    from coda_hf.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse's own usage errors
            code = e.code
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    return f"exit {code}" + (f": {' | '.join(lines)}" if lines else "")


def _tokens(sandbox: Sandbox, image: torch.Tensor):
    with torch.no_grad():
        return sandbox.coda.encode(image).token_ids


def _pixels(h: int = 32, w: int = 32) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1


# ------------------------------------------------------------------------------------ image cases
def _encode(sandbox: Sandbox, images: torch.Tensor, **kwargs) -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            ids = sandbox.coda.encode(images, **kwargs).token_ids
    note = f"; warning: {caught[0].message}" if caught else ""
    return f"ok: token ids {tuple(ids.shape)}{note}"


def _nan(sandbox: Sandbox) -> str:
    x = _pixels()
    x[0, 0, 0, 0] = float("nan")
    return _encode(sandbox, x)


def _pipe(sandbox: Sandbox, source, **kwargs) -> str:
    result = sandbox.pipeline(source, **kwargs)
    results = result if isinstance(result, list) else [result]
    return f"ok: {len(results)} result(s), image_size {results[0]['image_size']}"


def _url(sandbox: Sandbox, name: str) -> str:
    from coda_hf.image_io import ImageLoadError

    with sandbox.http_server() as base:
        try:
            return _pipe(sandbox, f"{base}/{name}", timeout=10)
        except ImageLoadError as e:  # the port changes from run to run
            raise ImageLoadError(str(e).replace(base, "http://127.0.0.1:PORT")) from None


def _load(source) -> str:
    from coda_hf.image_io import load_image

    return f"ok: {load_image(source).size}"


IMAGE_CASES = [
    Case("images", "`model.encode` of an image holding NaN", _nan, r"^ValueError: .*non-finite"),
    Case("images", "`model.encode` of float values in [0, 255]", lambda s: _encode(s, (_pixels() + 1) * 127.5),
         r"^ValueError: pixel values must lie in \[-1, 1\]; got values in \[\d"),
    Case("images", "`model.encode(..., clip=True)` of values slightly outside [-1, 1]",
         lambda s: _encode(s, _pixels() * 1.2, clip=True), r"^ok: token ids \(1, \d+\); warning: .*clipped"),
    Case("images", "`model.encode` of a 2x2 image", lambda s: _encode(s, _pixels(2, 2)),
         r"^ValueError: image size \(2, 2\) is too small: .*at least 4 x 4 pixels"),
    Case("images", "`model.encode` of a 6x5 image (not a multiple of the factor 2)", lambda s: _encode(s, _pixels(6, 5)),
         r"^ValueError: image size \(6, 5\) must be a positive multiple of the downsample factor 2"),
    Case("images", "`model.encode` of a uint8 tensor", lambda s: _encode(s, torch.zeros(1, 3, 32, 32, dtype=torch.uint8)),
         r"^ValueError: images must be a float tensor in \[-1, 1\]; got dtype torch.uint8"),
    Case("images", "`model.encode` of a 1-channel batch", lambda s: _encode(s, torch.zeros(1, 1, 32, 32)),
         r"^ValueError: images must be a \(B, 3, H, W\)"),
    Case("images", "pipeline on an empty array `np.zeros((0, 0, 3), np.uint8)`",
         lambda s: _pipe(s, np.zeros((0, 0, 3), np.uint8)), r"^ImageLoadError: array: empty image"),
    Case("images", "pipeline on an `http://` URL (local server)", lambda s: _url(s, "a.png"),
         r"^ok: 1 result\(s\), image_size \(32, 40\)"),
    Case("images", "pipeline on a URL that answers 404", lambda s: _url(s, "missing.png"),
         r"^ImageLoadError: cannot fetch image http://127.0.0.1:PORT/missing.png: .*404"),
    Case("images", "pipeline on a (3, H, W) float tensor in [0, 1]", lambda s: _pipe(s, torch.rand(3, 40, 36)),
         r"^ok: 1 result\(s\), image_size \(34, 32\)"),
    Case("images", "pipeline on a (2, 3, H, W) uint8 tensor", lambda s: _pipe(s, torch.zeros(2, 3, 32, 32, dtype=torch.uint8)),
         r"^ok: 2 result\(s\)"),
    Case("images", "pipeline on a float tensor in [-1, 1]", lambda s: _pipe(s, torch.rand(3, 8, 8) * 2 - 1),
         r"^ImageLoadError: tensor: float image values must lie in \[0, 1\]"),
    Case("images", "`load_image` of a truncated PNG", lambda s: _load(s.truncated),
         r"^ImageLoadError: cannot read image .*truncated.png"),
    Case("images", "`load_image` of a text file named .png", lambda s: _load(s.text),
         r"^ImageLoadError: cannot read image .*notes.png"),
    Case("images", "`load_image` of a missing file", lambda s: _load(s.images / "nope.png"),
         r"^ImageLoadError: image file not found: .*nope.png"),
]


# ------------------------------------------------------------------------------------ token id cases
def _decode(sandbox: Sandbox, ids, **kwargs) -> str:
    with torch.no_grad():
        return f"ok: images {tuple(sandbox.coda.decode(ids, **kwargs).shape)}"


def _shifted_ids(sandbox: Sandbox) -> torch.Tensor:
    ids = _tokens(sandbox, _pixels()).clone()
    ids[0, -1] = 32
    return ids


TOKEN_CASES = [
    Case("token ids", "`decode` of an id equal to the codebook size", lambda s: _decode(s, _shifted_ids(s)),
         r"^ValueError: indices of level 2 must lie in \[0, 31\]"),
    Case("token ids", "`decode` of float token ids", lambda s: _decode(s, _tokens(s, _pixels()).float()),
         r"^ValueError: .*integer"),
    Case("token ids", "`decode` of a (N,) vector instead of (B, N)", lambda s: _decode(s, _tokens(s, _pixels())[0]),
         r"^ValueError: token ids must be \(B, N\)"),
    Case("token ids", "`decode` of a 32x40 image's ids without a size", lambda s: _decode(s, _tokens(s, _pixels(32, 40))),
         r"^ValueError: cannot infer a square latent size .*image_size"),
    Case("token ids", "`decode(ids, image_size=(32, 40))`",
         lambda s: _decode(s, _tokens(s, _pixels(32, 40)), image_size=(32, 40)), r"^ok: images \(1, 3, 32, 40\)"),
    Case("token ids", "`decode(ids, image_size=...)` of the wrong size",
         lambda s: _decode(s, _tokens(s, _pixels(32, 40)), image_size=(32, 32)), r"^ValueError: "),
]


# ------------------------------------------------------------------------------------ model directory cases
def _from(cls_name: str, path: str, **kwargs) -> str:
    from coda_hf.maskgit import MaskGitTransformer
    from coda_hf.models import CodaVQModel, VQGANModel
    from coda_hf.models.loading import load_autoencoder_kl

    loaders = {"CodaVQModel": CodaVQModel.from_pretrained, "VQGANModel": VQGANModel.from_pretrained,
               "MaskGitTransformer": MaskGitTransformer.from_pretrained, "AutoencoderKL": load_autoencoder_kl}  # fmt: skip
    model = loaders[cls_name](path, **kwargs)
    devices = sorted({str(p.device) for p in model.parameters()})
    return f"ok: {type(model).__name__}, weights on {devices}"


def _timed_missing(path: str) -> str:
    from coda_hf.models import CodaVQModel

    start = time.perf_counter()
    try:
        CodaVQModel.from_pretrained(path)
    except FileNotFoundError as e:
        fast = "at once" if time.perf_counter() - start < 1 else "SLOWLY"
        raise FileNotFoundError(f"{e} [{fast}]") from e
    return "ok"


def _checkpoint_pickle(sandbox: Sandbox) -> str:
    from coda_hf.training.checkpointing import refuse_unsafe_pickles

    folder = sandbox.fresh("checkpoint-10")
    _plant_pickle(folder, "custom_checkpoint_0.pkl", sandbox.marker)
    refuse_unsafe_pickles(folder)
    return "ok: accepted"


MODEL_CASES = [
    Case("model directories", "`CodaVQModel.from_pretrained(AutoencoderKL dir)`", lambda s: _from("CodaVQModel", s.path("vae")),
         r"^CheckpointError: SANDBOX/vae: its config.json records _class_name 'AutoencoderKL', but CodaVQModel.from_pretrained expects 'CodaVQModel'"),
    Case("model directories", "`CodaVQModel.from_pretrained(VQGANModel dir)`", lambda s: _from("CodaVQModel", s.path("vqgan")),
         r"^CheckpointError: SANDBOX/vqgan: its config.json records _class_name 'VQGANModel', but CodaVQModel.from_pretrained expects 'CodaVQModel'"),
    Case("model directories", "`VQGANModel.from_pretrained(CodaVQModel dir)`", lambda s: _from("VQGANModel", s.path("coda")),
         r"^CheckpointError: SANDBOX/coda: its config.json records _class_name 'CodaVQModel', but VQGANModel.from_pretrained expects 'VQGANModel'"),
    Case("model directories", "`AutoencoderKL` loaded from a CodaVQModel dir (e.g. `--pretrained_vae`)",
         lambda s: _from("AutoencoderKL", s.path("coda")), r"^CheckpointError: SANDBOX/coda: its config.json records _class_name 'CodaVQModel', but AutoencoderKL.from_pretrained expects 'AutoencoderKL'"),
    Case("model directories", "`MaskGitTransformer.from_pretrained(CodaVQModel dir)`",
         lambda s: _from("MaskGitTransformer", s.path("coda")),
         r"^CheckpointError: SANDBOX/coda: its config.json records model_type 'coda_vq', but MaskGitTransformer.from_pretrained expects 'coda_maskgit'"),
    Case("model directories", "a CodaVQModel checkpoint without its quantizer weights",
         lambda s: _from("CodaVQModel", s.path("coda_partial")), r"^CheckpointError: .*weight\(s\) of CodaVQModel are not in it"),
    Case("model directories", "the same with `allow_mismatched_checkpoint=True`",
         lambda s: _from("CodaVQModel", s.path("coda_partial"), allow_mismatched_checkpoint=True),
         r"^ok: CodaVQModel, weights on \['cpu'\]"),
    Case("model directories", "`CodaVQModel.from_pretrained(AutoencoderKL dir, allow_mismatched_checkpoint=True)`",
         lambda s: _from("CodaVQModel", s.path("vae"), allow_mismatched_checkpoint=True), r"^ok: CodaVQModel, weights on \['cpu'\]"),
    Case("model directories", "a CODA dir whose only weights are a malicious `diffusion_pytorch_model.bin`",
         lambda s: _from("CodaVQModel", s.path("pickle_diffusers")),
         r"^CheckpointError: .*no safetensors weights.*diffusion_pytorch_model.bin"),
    Case("model directories", "a MaskGIT dir whose only weights are a malicious `pytorch_model.bin`",
         lambda s: _from("MaskGitTransformer", s.path("pickle_transformers")),
         r"^CheckpointError: .*no safetensors weights.*pytorch_model.bin"),
    Case("model directories", "`from_pretrained(..., use_safetensors=False)`",
         lambda s: _from("CodaVQModel", s.path("coda"), use_safetensors=False), r"^CheckpointError: .*safetensors only"),
    Case("model directories", "a training checkpoint with a malicious `custom_checkpoint_0.pkl` (resume)",
         _checkpoint_pickle, r"^CheckpointError: .*custom_checkpoint_0.pkl holds more than tensors"),
    Case("model directories", "`from_pretrained('./no-such-dir')`", lambda s: _timed_missing("./no-such-dir"),
         r"^FileNotFoundError: model directory ./no-such-dir does not exist .*\[at once\]"),
    Case("model directories", "`from_pretrained('some-typo')` (a plausible Hub id) with HF_HUB_OFFLINE",
         lambda s: _timed_missing("some-typo"), r"^FileNotFoundError: .*HF_HUB_OFFLINE is set.*\[at once\]"),
    Case("model directories", "`from_pretrained(FILE)`", lambda s: _from("CodaVQModel", s.path("coda/config.json")),
         r"^NotADirectoryError: .*config.json is a file"),
]


# ------------------------------------------------------------------------------------ config cases
def _edited_coda(sandbox: Sandbox, name: str, edit: Callable[[dict], object]) -> str:
    import shutil

    folder = sandbox.fresh(name) / "model"
    shutil.copytree(sandbox.root / "coda", folder)
    config = json.loads((folder / "config.json").read_text())
    result = edit(config)
    (folder / "config.json").write_text(result if isinstance(result, str) else json.dumps(config))
    return _from("CodaVQModel", str(folder))


def _training_config(*argv: str) -> str:
    from coda_hf.training.config import TrainingConfig

    return f"ok: {TrainingConfig.from_args(list(argv)).model}"


CONFIG_CASES = [
    Case("configs", "a model `config.json` that is not JSON", lambda s: _edited_coda(s, "badjson", lambda c: "{not json"),
         r"^CheckpointError: .*config.json is not valid JSON"),
    Case("configs", "a model config naming an unknown quantizer",
         lambda s: _edited_coda(s, "badquantizer", lambda c: c["quantizer"].update(name="nope")), r"^ValueError: .*nope"),
    Case("configs", "a model config whose quantizer dim differs from the VAE's latent channels",
         lambda s: _edited_coda(s, "baddim", lambda c: c["quantizer"].update(dim=3)), r"^ValueError: .*dim"),
    Case("configs", "a training option that does not exist", lambda s: _training_config("--learning_rat", "1e-4"),
         r"^ValueError: command line: unknown option --learning_rat"),
    Case("configs", "a training option of the wrong type", lambda s: _training_config("--train_batch_size", "many"),
         r"^ValueError: .*train_batch_size"),
]


# ------------------------------------------------------------------------------------ training data cases
def _train_rows(sandbox: Sandbox, names: list[str]) -> str:
    from coda_hf.training.config import TrainingConfig
    from coda_hf.training.data import load_source

    folder = sandbox.fresh("train-" + "-".join(n.split(".")[0] for n in names))
    for i, name in enumerate(names):
        _image(folder / name, (16, 16), i)
    config = TrainingConfig(model="vqgan", train_data_dir=str(folder), cache_dir=str(folder / ".hf_cache"))
    ds, _ = load_source(config)
    return f"ok: {len(ds)} of {len(names)} images"


def _maskgit_rows(sandbox: Sandbox) -> str:
    from coda_hf.training.maskgit_trainer import MaskGitTrainingConfig, training_images

    folder = sandbox.fresh("maskgit-train")
    names = ["cats/train_a.png", "cats/b.png", "dogs/valid_c.png", "dogs/d.png"]
    for i, name in enumerate(names):
        _image(folder / name, (16, 16), i)
    ds = training_images(MaskGitTrainingConfig(tokenizer="t", output_dir="o", train_data_dir=str(folder)))
    return f"ok: {len(ds)} of {len(names)} images, labels {ds.features['label'].names}"


def _train_missing(sandbox: Sandbox, make: bool) -> str:
    from coda_hf.training.config import TrainingConfig
    from coda_hf.training.data import load_source

    folder = sandbox.root / "cases" / ("empty-train" if make else "no-train")
    if make:
        folder.mkdir(parents=True)
        (folder / "readme.txt").write_text("no images")
    load_source(TrainingConfig(model="vqgan", train_data_dir=str(folder)))
    return "ok"


def _train_stream(sandbox: Sandbox) -> str:
    from coda_hf.training.data import ImageStream

    cells = [{"image": {"path": str(p), "bytes": None}} for p in (*sandbox.good, sandbox.truncated, sandbox.text)]
    stream = ImageStream(cells, "image", lambda image, generator=None: torch.zeros(3, 8, 8), batch_size=2, seed=0,
                         epoch=0, rank=0)  # fmt: skip
    batches = list(stream)
    return f"ok: {sum(len(b['id']) for b in batches)} images trained on, {int(stream.trailing_bad.sum())} skipped and counted"


TRAINING_CASES = [
    Case("training inputs", "`--train_data_dir` with `train_a.png`, `train_b.png` and 4 other images",
         lambda s: _train_rows(s, ["train_a.png", "train_b.png", "c.png", "d.png", "e.png", "f.png"]), r"^ok: 6 of 6 images"),
    Case("training inputs", "`--train_data_dir` with a `valid_x.png` among the images",
         lambda s: _train_rows(s, ["a.png", "valid_x.png", "b.png"]), r"^ok: 3 of 3 images"),
    Case("training inputs", "MaskGIT `--train_data_dir` with class folders holding `train_a.png` and `valid_c.png`",
         _maskgit_rows, r"^ok: 4 of 4 images, labels \['cats', 'dogs'\]"),
    Case("training inputs", "`--train_data_dir` that does not exist", lambda s: _train_missing(s, False),
         r"^FileNotFoundError: --train_data_dir .* is not a directory"),
    Case("training inputs", "`--train_data_dir` without images", lambda s: _train_missing(s, True),
         r"^FileNotFoundError: --train_data_dir .* holds no images"),
    Case("training inputs", "a truncated and a non-image file among the training images", _train_stream,
         r"^ok: 2 images trained on, 2 skipped and counted"),
]


# ------------------------------------------------------------------------------------ CLI cases
def _tokenize(s: Sandbox, output: str, *extra: str, model: str = "coda") -> str:
    return cli(s, "tokenize", *map(str, s.good), "--model", s.path(model), "--output", output, "--no-progress", *extra)


def _existing_output(s: Sandbox, *extra: str) -> str:
    out = s.fresh("existing" + "".join(extra)) / "tokens.safetensors"
    out.write_text("precious")
    result = _tokenize(s, str(out), *extra)
    kept = "kept" if out.read_bytes() == b"precious" else "replaced"
    return f"{result} (old file {kept})"


def _equal_stems(s: Sandbox) -> str:
    folder = s.fresh("stems")
    inputs = [_image(folder / "valid.png"), _image(folder / "sub" / "valid.png", seed=1),
              _image(folder / "sub" / "valid_1.png", seed=2)]  # fmt: skip
    result = cli(s, "reconstruct", *map(str, inputs), "--model", s.path("coda"), "--output-dir", str(folder / "out"),
                 "--no-progress")  # fmt: skip
    written = sorted(p.relative_to(folder / "out").as_posix() for p in (folder / "out").rglob("*.png"))
    return f"{result}: {len(written)} files for 3 inputs {written}"


def _reconstruct_into(s: Sandbox, existing: bool) -> str:
    folder = s.fresh(f"recon-{existing}")
    out = folder / "out"
    if existing:
        out.mkdir()
        (out / "a.png").write_text("precious")
    else:
        out.write_text("a file")
    return cli(s, "reconstruct", *map(str, s.good), "--model", s.path("coda"), "--output-dir", str(out), "--no-progress")


def _decode_cli(s: Sandbox, model: str | None = None, tokens: str | None = None) -> str:
    folder = s.fresh(f"decode-{model}-{tokens is not None}")
    if tokens is None:
        tokens = str(folder / "tokens.safetensors")
        _tokenize(s, tokens)
    extra = ["--model", s.path(model)] if model else []
    result = cli(s, "decode", tokens, "--output-dir", str(folder / "out"), *extra)
    if not (folder / "out").is_dir():
        return result
    from coda_hf.tokens_file import read_tokens

    stored = [item.image_size for item in read_tokens(tokens).images]
    written = [Image.open(p).size[::-1] for p in sorted((folder / "out").glob("*.png"))]  # (H, W)
    return f"{result}; {len(written)} PNGs, (H, W) {written}, stored image_size {stored}"


def _partial_tokenize(s: Sandbox) -> str:
    from coda_hf.tokens_file import read_tokens

    out = s.fresh("partial") / "t.safetensors"
    result = cli(s, "tokenize", str(s.good[0]), str(s.truncated), str(s.text), str(s.good[1]), "--model", s.path("coda"),
                 "--output", str(out), "--no-progress")  # fmt: skip
    keys = [item.key for item in read_tokens(out).images]
    return f"{result}; tokens of {len(keys)} images written {keys}"


def _evaluate_truncated(s: Sandbox) -> str:
    folder = s.fresh("evaluate")
    out = folder / "out"
    result = cli(s, "evaluate", "--model", s.path("vae"), "--data", str(s.images), "--resolution", "32",
                 "--output-dir", str(out), "--no-progress")  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else {}
    return f"{result.split(':')[0]}: num_images {metrics.get('num_images')}, skipped_images {metrics.get('skipped_images')}"


def _debug(s: Sandbox) -> str:
    from coda_hf.cli import main

    main(["tokenize", str(s.good[0]), "--model", s.path("vae"), "--output", str(s.fresh("debug") / "t.st"), "--debug"])
    return "ok"


CLI_CASES = [
    Case("CLI", "`coda-hf tokenize --model VAE_DIR` (a plain AutoencoderKL)", lambda s: _tokenize(s, str(s.fresh("vae") / "t"), model="vae"),
         r"^exit 2: coda-hf tokenize: error: SANDBOX/vae: its config.json records _class_name 'AutoencoderKL', but CodaVQModel.from_pretrained expects 'CodaVQModel'"),
    Case("CLI", "`coda-hf tokenize --model MISSING_DIR`",
         lambda s: cli(s, "tokenize", str(s.good[0]), "--model", s.path("missing"), "--output", str(s.fresh("m") / "t")),
         r"^exit 2: coda-hf tokenize: error: model directory .*missing does not exist"),
    Case("CLI", "`coda-hf tokenize --output EXISTING`", _existing_output,
         r"^exit 2: coda-hf tokenize: error: --output .*tokens.safetensors already exists; pass --overwrite .*\(old file kept\)"),
    Case("CLI", "`coda-hf tokenize --output EXISTING --overwrite`", lambda s: _existing_output(s, "--overwrite"),
         r"^exit 0 \(old file replaced\)"),
    Case("CLI", "`coda-hf tokenize --output DIR`", lambda s: _tokenize(s, str(s.fresh("outdir"))),
         r"^exit 2: coda-hf tokenize: error: --output .*outdir is a directory"),
    Case("CLI", "`coda-hf tokenize --output FILE/tokens.safetensors` (below a file)",
         lambda s: _tokenize(s, str(s.good[0]) + "/tokens.safetensors"), r"^exit 2: coda-hf tokenize: error: --output .*a.png is a file, not a folder"),
    Case("CLI", "`coda-hf tokenize --output /proc/x/tokens.safetensors` (unwritable)",
         lambda s: _tokenize(s, "/proc/x/tokens.safetensors"), r"^exit 2: coda-hf tokenize: error: --output .*cannot write in /proc"),
    Case("CLI", "`coda-hf tokenize --resolution 0`", lambda s: _tokenize(s, str(s.fresh("r0") / "t"), "--resolution", "0"),
         r"^exit 2: coda-hf tokenize: error: --resolution 0: must be a positive number"),
    Case("CLI", "`coda-hf tokenize --resolution 2` (below the model's minimum)",
         lambda s: _tokenize(s, str(s.fresh("r2") / "t"), "--resolution", "2"),
         r"^exit 2: coda-hf tokenize: error: --resolution 2: smaller than the model's minimum image size 4"),
    Case("CLI", "`coda-hf tokenize --resolution abc`", lambda s: _tokenize(s, str(s.fresh("rabc") / "t"), "--resolution", "abc"),
         r"^exit 2: coda-hf tokenize: error: argument --resolution: invalid int value: 'abc'"),
    Case("CLI", "`coda-hf tokenize GOOD TRUNCATED NOT_AN_IMAGE GOOD`", _partial_tokenize,
         r"^exit 1; tokens of 2 images written \['tokens_0', 'tokens_3'\]$"),
    Case("CLI", "`coda-hf reconstruct valid.png sub/valid.png sub/valid_1.png --output-dir out`", _equal_stems,
         r"^exit 0: 3 files for 3 inputs \['sub/valid.png', 'sub/valid_1.png', 'valid.png'\]"),
    Case("CLI", "`coda-hf reconstruct` into a folder that holds an output PNG", lambda s: _reconstruct_into(s, True),
         r"^exit 2: coda-hf reconstruct: error: --output-dir .* already holds 1 of the 2 output\(s\) \(e.g. a.png\); pass --overwrite"),
    Case("CLI", "`coda-hf reconstruct --output-dir FILE`", lambda s: _reconstruct_into(s, False),
         r"^exit 2: coda-hf reconstruct: error: --output-dir .*out is a file"),
    Case("CLI", "`coda-hf decode tokens.safetensors --output-dir out`", lambda s: _decode_cli(s),
         r"^exit 0; 2 PNGs, \(H, W\) \[\(32, 40\), \(32, 34\)\], stored image_size \[\(32, 40\), \(32, 34\)\]"),
    Case("CLI", "`coda-hf decode` with a model of another codebook size", lambda s: _decode_cli(s, "coda16"),
         r"^exit 2: coda-hf decode: error: .*32-code codebook; model .*coda16 has 16 codes"),
    Case("CLI", "`coda-hf decode` of a file that is not a token file", lambda s: _decode_cli(s, tokens=str(s.good[0])),
         r"^exit 2: coda-hf decode: error: .*a.png is not a coda-hf token file"),
    Case("CLI", "`coda-hf evaluate` on a folder with a truncated and a non-image file", _evaluate_truncated,
         r"^exit 0: num_images 2, skipped_images 2"),
    Case("CLI", "`coda-hf evaluate --data IMAGE_FOLDER --split valid`",
         lambda s: cli(s, "evaluate", "--model", s.path("vae"), "--data", str(s.images), "--split", "valid",
                       "--output-dir", str(s.fresh("split"))),  # fmt: skip
         r"^exit 2: coda-hf evaluate: error: --data .* is a folder of images \(one split\)"),
    Case("CLI", "`coda-hf tokenize` without an image", lambda s: cli(s, "tokenize"),
         r"^exit 2: coda-hf tokenize: error: the following arguments are required: images \(see coda-hf tokenize --help\)$"),
    Case("CLI", "`coda-hf tokenize --model VAE_DIR --debug`", _debug, r"^CheckpointError: .*'AutoencoderKL'"),
]

CASES = IMAGE_CASES + TOKEN_CASES + MODEL_CASES + CONFIG_CASES + TRAINING_CASES + CLI_CASES
GROUPS = ("images", "token ids", "model directories", "configs", "training inputs", "CLI")


# ------------------------------------------------------------------------------------ the table
def _cell(text: str, limit: int = 330) -> str:
    text = text.replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_cases(cases: list[Case], root: Path) -> list[tuple[Case, str, bool]]:
    """``(case, outcome, matches its expectation)`` for every case, on one sandbox in ``root``."""
    sandbox = Sandbox(root)
    return [(case, text, re.search(case.expect, text) is not None) for case in cases for text in [outcome(case, sandbox)]]


def markdown(results: list[tuple[Case, str, bool]]) -> str:
    rows = ["| | input | outcome |", "|---|---|---|"]
    for case, text, ok in results:
        rows.append(f"| {'ok' if ok else '**UNEXPECTED**'} | {case.group}: {_cell(case.input)} | {_cell(text)} |")
    expected = sum(ok for _, _, ok in results)
    return (
        "# What bad input does\n\n"
        "Generated by `python benchmarks/bad_input_table.py --output docs/bad-input.md` (tiny random models, offline,\n"
        "in a temporary folder); `tests/test_bad_input_table.py` runs the same cases. Each outcome is the\n"
        "exception (type: message), the CLI's exit code and its one-line error, or the result. Exit code 2: a\n"
        "usage error (bad option, input or output path); 1: some inputs failed, the others finished.\n\n"
        f"{expected} of {len(results)} cases have the expected outcome.\n\n" + "\n".join(rows) + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", default="docs/bad-input.md", help="markdown file to write ('-' for stdout)")
    p.add_argument("--only", nargs="*", choices=GROUPS, default=None, help="run only these groups of cases")
    args = p.parse_args(argv)
    import logging

    import diffusers
    import transformers

    logging.basicConfig(level=logging.CRITICAL)  # the libraries' own warnings are not the table
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    cases = [c for c in CASES if args.only is None or c.group in args.only]
    with tempfile.TemporaryDirectory(prefix="coda-hf-bad-input-") as tmp:
        cwd = os.getcwd()
        output = Path(args.output).resolve() if args.output != "-" else None
        os.chdir(tmp)  # relative paths of the cases ("./no-such-dir") resolve inside the sandbox
        try:
            results = run_cases(cases, Path(tmp))
        finally:
            os.chdir(cwd)
    text = markdown(results)
    if output is None:
        sys.stdout.write(text)
    else:
        from coda_hf.output_files import write_text_atomic

        write_text_atomic(output, text)
    unexpected = [case.input for case, _, ok in results if not ok]
    for name in unexpected:
        sys.stderr.write(f"unexpected outcome: {name}\n")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
