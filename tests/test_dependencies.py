"""Dependencies sit where they are used: every package src/ imports is declared (a requirement, or an extra for
an optional feature), every requirement is used by src/, and the repository tooling's needs live in extras."""

from __future__ import annotations

import ast
import configparser
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Requirements that src/ uses without importing them: the reason stands beside each.
USED_WITHOUT_IMPORT = {
    "tensorboard": "accelerate's tracker loads it for report_to='tensorboard' (the trainers' default)",
}


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0]).lower()


def _setup() -> tuple[set[str], dict[str, set[str]]]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = lambda text: [x for x in text.splitlines() if x.strip() and not x.strip().startswith("#")]  # noqa: E731
    required = {_name(x) for x in lines(parser["options"]["install_requires"])}
    extras = {extra: {_name(x) for x in lines(text)} for extra, text in parser["options.extras_require"].items()}
    return required, extras


def _imported(folder: Path) -> dict[str, set[str]]:
    """Top-level modules imported anywhere under ``folder`` (lazy imports included) -> the files."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def _distributions(module: str) -> set[str]:
    return {_name(d) for d in packages_distributions().get(module, [])}


def test_src_imports_only_declared_packages():
    required, extras = _setup()
    optional = set().union(*extras.values())
    for module, files in sorted(_imported(ROOT / "src" / "coda_hf").items()):
        if module in sys.stdlib_module_names or module == "coda_hf":
            continue
        dists = _distributions(module)
        assert dists, f"{module} (imported by {sorted(files)}) is not installed"
        assert dists & (required | optional), (
            f"src/ imports {module} ({sorted(files)}) but setup.cfg declares none of {sorted(dists)}"
        )


def test_every_requirement_is_used_by_src():
    required, _ = _setup()
    used = set().union(*(_distributions(m) for m in _imported(ROOT / "src" / "coda_hf")))
    unused = required - used - set(USED_WITHOUT_IMPORT)
    assert not unused, f"requirements that src/ never imports (move them to an extra or drop them): {sorted(unused)}"
    assert "scipy" not in required and "scipy" in _setup()[1]["dev"]  # the tests' sqrtm reference only


def test_tooling_dependencies_are_in_extras():
    """The photo builder (tools/, not installed) imports scikit-image by default: it is in the 'data' extra,
    which the README's install line for the builder names; the tests need it too (dev)."""
    required, extras = _setup()
    assert "skimage" in _imported(ROOT / "tools")
    assert "scikit-image" in extras["data"] and "scikit-image" in extras["dev"] and "scikit-image" not in required
