"""Every case of ``benchmarks/bad_input_table.py`` (the table in docs/bad-input.md) has its expected outcome:
a clean error naming the input, or the right result. The script and this test share one ``CASES`` list."""

from __future__ import annotations

import importlib.util
import pickle
import re
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bad_input_table.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("bad_input_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


table = _load_script()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    return table.Sandbox(tmp_path_factory.mktemp("bad_input"))


@pytest.mark.parametrize("case", table.CASES, ids=[f"{i:02d}-{c.group}" for i, c in enumerate(table.CASES)])
def test_case_has_its_expected_outcome(case, sandbox, monkeypatch):
    monkeypatch.chdir(sandbox.root)  # "./no-such-dir" and friends resolve inside the sandbox
    text = table.outcome(case, sandbox)
    assert not sandbox.marker.exists() and not text.startswith("PICKLE EXECUTED"), text
    assert re.search(case.expect, text), f"{case.input}\n  outcome:  {text}\n  expected: {case.expect}"
    if text.startswith("exit "):  # CLI errors are one line
        assert "Traceback" not in text


def test_the_planted_pickles_are_live(sandbox, tmp_path):
    """The control: unpickling a planted weights file DOES run its payload, so the cases above that
    refuse those files (and never create the marker) prove something."""
    marker = tmp_path / "ran"
    planted = table._plant_pickle(tmp_path / "model", "pytorch_model.bin", marker)
    with open(planted, "rb") as f:
        pickle.load(f)  # the attack the loaders refuse
    assert marker.exists()


def test_cases_cover_every_group():
    assert {c.group for c in table.CASES} == set(table.GROUPS)
    assert len({c.input for c in table.CASES}) == len(table.CASES)


def test_script_help_and_smoke(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        table.main(["--help"])
    assert info.value.code == 0 and "--output" in capsys.readouterr().out
    out = tmp_path / "docs" / "bad-input.md"
    assert table.main(["--only", "configs", "--output", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# What bad input does") and "5 of 5 cases have the expected outcome" in text
