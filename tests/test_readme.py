"""Every ```python block of README.md runs as written (blocks marked ```python no-run are shown, not run).

Blocks run in order in one namespace, in a temporary working directory, so later snippets
may use names that earlier ones defined, exactly as a reader pasting them would.
"""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python[ \t]*(?P<tag>[^\n]*)\n(?P<code>.*?)^```", re.S | re.M)


def readme_blocks():
    text = README.read_text(encoding="utf-8")
    return [m.group("code") for m in BLOCK.finditer(text) if "no-run" not in m.group("tag")]


def test_readme_has_runnable_blocks():
    assert len(readme_blocks()) >= 5


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    import huggingface_hub.constants as hub_constants

    offline = hub_constants.HF_HUB_OFFLINE
    for i, code in enumerate(readme_blocks()):
        # Blocks that start a LocalHubServer talk to 127.0.0.1 only: let huggingface_hub out of offline mode.
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", "LocalHubServer(" not in code and offline)
        try:
            exec(compile(code, f"README.md block {i}", "exec"), namespace)
        except Exception as e:  # pragma: no cover - the message is the point
            pytest.fail(f"README python block {i} failed: {type(e).__name__}: {e}\n---\n{code}")
