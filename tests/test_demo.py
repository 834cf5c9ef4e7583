"""``coda-hf demo`` on the bundled models and photos: its outputs, and its figures against the model cards."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from coda_hf.bundled import bundled_model, bundled_model_info, bundled_photos
from coda_hf.cli import main as cli_main
from coda_hf.demo import OUTPUT_NAMES, RECONSTRUCTION_MODELS

ROOT = Path(__file__).resolve().parents[1]
DECIMALS = {"psnr": 2, "ssim": 4, "fd_effnet": 2, "utilization": 4}  # how the cards print them (utilization: 12.34%)
SLACK = 1e-3  # relative


def card_demo_table(name: str) -> dict[str, dict[str, float]]:
    """The "Demo photos" table of a model card: model -> {column: value} (percentages as fractions)."""
    text = (ROOT / "model_cards" / bundled_model_info(name)["card"]).read_text()
    section = text.split("## Demo photos", 1)[1]
    rows = [line.strip().strip("|").split("|") for line in section.splitlines() if line.startswith("|")]
    header = [h.strip() for h in rows[0]]
    table = {}
    for cells in rows[2:]:
        values = {}
        for key, cell in zip(header[1:], cells[1:]):
            cell = cell.strip()
            if cell != "-":
                values[key] = float(cell.rstrip("%")) / (100 if cell.endswith("%") else 1)
        table[cells[0].strip()] = values
    return table


@pytest.mark.slow
def test_demo_writes_its_outputs_and_prints_the_cards_figures(tmp_path, capsys, monkeypatch):
    """The demo as a user runs it (a fresh process, no options; benchmarks/bench_demo.py times the same run)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_demo import time_demo

    out = tmp_path / "demo"
    run = time_demo(output_dir=out)
    printed = run["stdout"]
    assert run["wall_s"] > run["demo_work_s"] > 0
    assert all((out / name).is_file() for name in OUTPUT_NAMES)
    report = json.loads((out / "metrics.json").read_text())
    photos = bundled_photos()
    assert [p["file"] for p in report["photos"]] == [p.name for p in photos]
    assert Image.open(out / "reconstructions.png").size == (256 * 4, 256 * len(photos))  # original + 3 models
    assert Image.open(out / "prior_samples.png").size == (4 * 64 * 2, 4 * 64 * 2)  # 16 samples, shown at 2x
    coda = report["tokens"]["photos-coda"]
    assert coda["tokens_per_image"] == 10_880 and coda["latent_tiles"] == 16 and coda["bits_per_token"] == 12
    assert report["tokens"]["photos-vqgan"]["bits_per_pixel"] == coda["bits_per_pixel"]  # matched bits
    assert "10,880 tokens per image (16 latent tiles x 680)" in printed and "1.992 bits per pixel" in printed
    assert "tokens per level: 16, 64, 144, 256, 400, 576, 1,024, 1,600, 2,704, 4,096" in printed
    from coda_hf.tokens_file import read_tokens

    tokens = read_tokens(out / "tokens.safetensors")
    assert len(tokens.images) == len(photos) and tokens.model == bundled_model("photos-coda")
    assert "<img src=\"reconstructions.png\"" in (out / "index.html").read_text()
    # The figures equal the bundled models' bundle.json and their cards (written by train_bundled.py from the
    # same measurement), at the cards' printed precision; SLACK allows for another thread count's float
    # summation order (the cards were measured on one thread).
    for name in RECONSTRUCTION_MODELS:
        measured, recorded = report["metrics"][name], bundled_model_info(name)["demo_metrics"]
        assert set(recorded) <= set(measured)
        for key, value in recorded.items():
            assert measured[key] == pytest.approx(value, rel=SLACK, abs=1e-6), (name, key)
        for card in {name, "photos-coda"}:  # its own card, and the comparison table in photos-coda's
            row = card_demo_table(card)[name]
            for key, value in row.items():
                assert abs(measured[key] - value) <= 0.5 * 10 ** -DECIMALS[key] + SLACK * abs(value), (card, name, key)
    # an existing demo is never overwritten silently
    assert cli_main(["demo", "--output-dir", str(out), "--no-progress"]) == 2
    assert re.search(r"already holds .* pass --overwrite", capsys.readouterr().err)


def test_demo_options_are_checked(tmp_path):
    assert cli_main(["demo", "--output-dir", str(tmp_path), "--samples", "0"]) == 2
    (tmp_path / "file").write_text("x")
    assert cli_main(["demo", "--output-dir", str(tmp_path / "file")]) == 2
