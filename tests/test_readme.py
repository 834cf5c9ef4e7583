"""Every ```python block of README.md and of the docs/ pages runs as written (blocks marked ```python no-run are
shown, not run).

Each page's blocks run in order in one namespace, in a fresh temporary working directory, so later snippets may
use names that earlier ones of the same page defined, exactly as a reader pasting them into one session would;
pages do not share names or files.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python[ \t]*(?P<tag>[^\n]*)\n(?P<code>.*?)^```", re.S | re.M)
# Pages without a runnable block, and why.
NO_CODE = {
    "bad-input.md": "a table written by benchmarks/bad_input_table.py",
    "app.md": "its code starts a web server; tests/test_app_views.py and test_app_browser.py check the app",
}


def page_blocks(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    return [m.group("code") for m in BLOCK.finditer(text) if "no-run" not in m.group("tag")]


def test_every_page_has_runnable_blocks():
    for page in PAGES:
        if page.name not in NO_CODE:
            assert page_blocks(page), f"{page.relative_to(ROOT)} has no runnable python block"
    assert sum(len(page_blocks(p)) for p in PAGES) >= 15


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    import huggingface_hub.constants as hub_constants

    offline = hub_constants.HF_HUB_OFFLINE
    for i, code in enumerate(page_blocks(page)):
        # Blocks that start a LocalHubServer talk to 127.0.0.1 only: let huggingface_hub out of offline mode.
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", "LocalHubServer(" not in code and offline)
        try:
            exec(compile(code, f"{page.name} block {i}", "exec"), namespace)
        except Exception as e:  # pragma: no cover - the message is the point
            pytest.fail(f"{page.name} python block {i} failed: {type(e).__name__}: {e}\n---\n{code}")
