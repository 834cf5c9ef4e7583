"""Publishing over real HTTP to a Hub-compatible server on 127.0.0.1 (no mocking of HfApi).

Each scenario runs in a subprocess so that HF_ENDPOINT / HF_HUB_OFFLINE are read at import
time exactly as in a user's process.
"""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from coda_hf.testing import LocalHubServer

TOKEN = "hf_local_test_token"


def _run(script: str, hub: LocalHubServer, tmp_path: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(
        HF_ENDPOINT=hub.endpoint, HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="0",
        HF_TOKEN=TOKEN, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1",
    )
    path = tmp_path / "scenario.py"
    path.write_text(textwrap.dedent(script))
    proc = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"scenario failed:\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-6000:]}"
    return proc


TINY_TOKENIZER = """
import torch
from diffusers import AutoencoderKL
from coda_hf import CodaVQModel

def tiny_tokenizer():
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8)
    model = CodaVQModel.from_vae(
        vae,
        quantizer={"name": "multiscale", "dim": 4, "scales": [1, 2, 4, 16],
                   "quantizer": "attention", "quantizer_kwargs": {"dim": 4, "codebook_size": 32, "codebook_dim": 8, "hidden_dim": 8}},
        lora={"rank": 2},
    )
    return model.eval()
"""


@pytest.mark.slow
def test_push_tokenizer_then_load_from_hub(tmp_path):
    with LocalHubServer(token=TOKEN) as hub:
        _run(
            TINY_TOKENIZER
            + """
import json, pathlib
from transformers import pipeline
from coda_hf.hub import push_to_hub
from coda_hf.cli import main

model = tiny_tokenizer()
model.save_pretrained("tok")
pathlib.Path("tok/metrics.json").write_text(json.dumps({"psnr": 20.5, "ssim": 0.55, "utilization": 1.0, "tokens_per_image": 21}))
pathlib.Path("tok/.training.lock").write_text("{}")  # a training run's lock: never uploaded
images = torch.rand(2, 3, 32, 32) * 2 - 1
with torch.no_grad():
    local = model.encode(images).token_ids

# library call (private repo) and the command line (public repo)
push_to_hub("tok", "org/tok", private=True)
assert main(["push", "--model", "tok", "--repo-id", "org/tok-cli", "--base-model", "org/source-vae"]) == 0

for repo in ("org/tok", "org/tok-cli"):
    loaded = CodaVQModel.from_pretrained(repo).eval()
    with torch.no_grad():
        assert torch.equal(loaded.encode(images).token_ids, local), repo
pipe = pipeline(task="image-tokenization", model="org/tok")
from PIL import Image
import numpy as np
arr = ((images[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype("uint8")
out = pipe(Image.fromarray(arr))
ref = pipeline(task="image-tokenization", model="tok")(Image.fromarray(arr))
assert torch.equal(torch.as_tensor(out["token_ids"]), torch.as_tensor(ref["token_ids"]))
print("OK")
"""
            ,
            hub,
            tmp_path,
        )
        card = hub.files("org/tok")["README.md"].decode()
        assert "library_name: coda_hf" in card and "model-index" in card and "psnr" in card
        assert "CodaVQModel.from_pretrained(\"org/tok\")" in card
        assert "base_model: org/source-vae" in hub.files("org/tok-cli")["README.md"].decode()
        assert hub._server.repos[("model", "org/tok")].private is True
        assert ".training.lock" not in hub.files("org/tok")


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("failure", [401, 413, "drop"])
def test_rejected_push_raises_and_keeps_local_files(tmp_path, failure):
    with LocalHubServer(token=TOKEN) as hub:
        # huggingface_hub retries dropped connections 5 times: fail them all.
        hub.fail_next_commit(failure, times=10)
        model_dir = tmp_path / "tok"
        _run(
            TINY_TOKENIZER
            + """
tiny_tokenizer().save_pretrained("tok")
""",
            hub,
            tmp_path,
        )
        before = _digest(model_dir)
        proc = _run(
            """
from coda_hf.hub import HubPushError, push_to_hub
try:
    push_to_hub("tok", "org/rejected")
except HubPushError as e:
    print("ERROR:", e)
else:
    raise SystemExit("the push should have failed")
""",
            hub,
            tmp_path,
        )
        assert "Local files were not modified" in proc.stdout
        assert (str(failure) in proc.stdout) if failure != "drop" else ("disconnected" in proc.stdout.lower())
        assert _digest(model_dir) == before
        assert hub.files("org/rejected") == {}


def test_local_hub_server_requires_token(tmp_path):
    with LocalHubServer(token=TOKEN) as hub:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(f"{hub.endpoint}/api/repos/create", data=json.dumps({"name": "x"}).encode(), method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        assert e.value.code == 401


def test_push_rejects_bad_repo_id(tmp_path):
    from coda_hf.hub import push_to_hub

    with pytest.raises(ValueError, match="org/name"):
        push_to_hub(tmp_path, "no-slash")
    with pytest.raises(FileNotFoundError):
        push_to_hub(tmp_path / "missing", "org/name")


@pytest.mark.slow
def test_save_pretrained_push_to_hub_through_both_libraries(tmp_path):
    """diffusers' and transformers' save_pretrained(push_to_hub=True, variant=...) upload the diffusers files
    with the image processor; both libraries load the variant back from the Hub."""
    with LocalHubServer(token=TOKEN) as hub:
        _run(
            TINY_TOKENIZER
            + """
import transformers
import coda_hf.transformers_integration as ti

model = tiny_tokenizer()
images = torch.rand(2, 3, 32, 32) * 2 - 1
with torch.no_grad():
    local = model.encode(images).token_ids
model.save_pretrained("direct", push_to_hub=True, repo_id="org/direct", variant="fp16")
ti.CodaVQForTokenization.from_pretrained("direct", variant="fp16").save_pretrained(
    "wrapped", push_to_hub=True, repo_id="org/wrapped", max_shard_size="100KB", commit_message="from transformers")
for repo in ("org/direct", "org/wrapped"):
    variant = "fp16" if repo == "org/direct" else None
    with torch.no_grad():
        assert torch.equal(CodaVQModel.from_pretrained(repo, variant=variant).eval().encode(images).token_ids, local)
        auto = transformers.AutoModel.from_pretrained(repo, variant=variant)
        assert torch.equal(auto(pixel_values=images).token_ids, local), repo
print("OK")
"""
            ,
            hub,
            tmp_path,
        )
        for repo in ("org/direct", "org/wrapped"):
            assert "preprocessor_config.json" in hub.files(repo)
        assert "diffusion_pytorch_model.fp16.safetensors" in hub.files("org/direct")
        assert "diffusion_pytorch_model.safetensors.index.json" in hub.files("org/wrapped")
