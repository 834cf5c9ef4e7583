"""``import coda_hf`` is cheap and ``import coda_hf.quantizers`` costs torch alone, while the transformers
integration still registers itself (lazily, when transformers is imported), whatever the import order."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from _helpers_training import script_env

import coda_hf

HEAVY = ("transformers", "diffusers", "peft", "accelerate", "datasets", "PIL", "yaml")


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", textwrap.dedent(code)], env=script_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_top_level_names_load_on_first_use():
    assert set(coda_hf.__all__) <= set(dir(coda_hf))
    assert coda_hf.build_quantizer is __import__("coda_hf.quantizers").quantizers.build_quantizer
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        coda_hf.nope  # noqa: B018


@pytest.mark.slow
def test_quantizers_cost_torch_alone():
    out = _run(f"""
        import sys
        import coda_hf.quantizers
        from coda_hf.quantizers import build_quantizer
        build_quantizer("multiscale", dim=4, scales=[1, 2])
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
    """)
    assert out.strip() == "[]"


@pytest.mark.slow
@pytest.mark.parametrize(
    "first",
    [
        "import coda_hf",  # the documented way (transformers first: the rest of the suite)
        "from diffusers import AutoencoderKL; import coda_hf",  # diffusers pulls transformers in mid-import
        "from coda_hf import CodaVQModel",  # a coda_hf import pulls transformers in
    ],
)
def test_transformers_finds_the_coda_classes_whatever_the_import_order(first, tmp_path):
    from _helpers_coda import tiny_coda

    tiny_coda().save_pretrained(tmp_path / "coda")
    out = _run(f"""
        {first}
        from transformers import AutoConfig, AutoModel, pipeline
        model = AutoModel.from_pretrained({str(tmp_path / "coda")!r})
        task = pipeline(task="image-tokenization", model={str(tmp_path / "coda")!r})
        print(type(model).__name__, type(task).__name__, type(AutoConfig.for_model("coda_maskgit")).__name__)
    """)
    assert out.split() == ["CodaVQForTokenization", "CodaTokenizerPipeline", "MaskGitConfig"]
