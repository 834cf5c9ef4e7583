"""benchmarks/compare_reproductions.py: a rerun's metrics against the landed ones, exact and at reported digits."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load():
    spec = importlib.util.spec_from_file_location("compare_reproductions", BENCHMARKS / "compare_reproductions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_flags_bit_and_digit_differences(tmp_path, capsys):
    landed = {"runs": {"vae": {"psnr": 19.5032, "ssim": 0.69}, "coda": {"psnr": 20.17800, "fd_effnet": 151.13}}}
    rerun = {"runs": {"vae": {"psnr": 19.5032, "ssim": 0.69}, "coda": {"psnr": 20.17809, "fd_effnet": 151.29}}}
    (tmp_path / "a.json").write_text(json.dumps(landed))
    (tmp_path / "b.json").write_text(json.dumps(rerun))
    (tmp_path / "m.json").write_text(json.dumps({"psnr": 20.178, "fd_effnet": 151.13}))
    rows = load().main(["--landed", str(tmp_path / "a.json"), "--rerun", str(tmp_path / "b.json"),
                        "--extra", f"coda-ref={tmp_path / 'm.json'}"])  # fmt: skip
    by = {(r["run"], r["metric"]): r for r in rows}
    assert by[("vae", "psnr")]["exact"] and by[("vae", "ssim")]["reported_digits"]
    assert not by[("coda", "psnr")]["exact"] and by[("coda", "psnr")]["reported_digits"]  # 20.18 both
    assert not by[("coda", "fd_effnet")]["reported_digits"]  # 151.1 vs 151.3
    assert by[("coda-ref", "psnr")]["exact"] and by[("coda-ref", "fd_effnet")]["exact"]
    assert "| coda | fd_effnet |" in capsys.readouterr().out


def test_help():
    with pytest.raises(SystemExit):
        load().main(["--help"])
