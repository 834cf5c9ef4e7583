"""benchmarks/reproduce.py's equal-bits configuration (benchmarks/fair_plan.py, fair_report.py, plot_frontier.py):
the plan, the choices on validation, the report's mean +- std and claims, and the whole 2-step smoke run (slow)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def repro(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # fair_plan / fair_report import their siblings
    spec = importlib.util.spec_from_file_location("reproduce", BENCHMARKS / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "reproduce", module)
    for sibling in ("fair_plan", "fair_report", "plot_frontier", "adopt_run"):
        monkeypatch.delitem(sys.modules, sibling, raising=False)
    spec.loader.exec_module(module)
    return module


def _bits_per_pixel(config: dict, tile: int) -> float:
    """tokens x log2(codebook) / pixels of a training stage's model, from its quantizer and widths."""
    from coda_hf.quantizers import build_quantizer

    spec = dict(config["quantizer"])
    factor = 2 ** (len(config["model_kwargs"].get("block_out_channels", [0, 0, 0])) - 1)
    q = build_quantizer(spec.pop("name"), dim=16, **spec)
    return q.num_tokens(tile // factor, tile // factor) * math.log2(q.codebook_size) / tile**2


def test_every_main_row_spends_two_bits_per_pixel_and_choices_precede_the_eval(repro, tmp_path):
    hw = repro.CONFIGS["cpu-latent16-fair"]
    plan = {s.name: s for s in repro.build_plan(tmp_path, "cpu-latent16-fair", tmp_path / "debs")}
    names = list(plan)
    assert plan["data"].command[-2:] == ["--validation-fraction", "0.15"]
    assert plan["vae-1x"].config["max_train_steps"] == 2400 and plan["vae-4x"].config["max_train_steps"] == 9600
    rates = {plan[f"coda-4x-lr{r:g}"].config["learning_rate"] for r in hw["lora_rates"]}
    assert rates == set(hw["lora_rates"])
    coda = plan["coda-4x-lr0.001"].config
    assert coda["pretrained_vae"].endswith("runs/vae-4x") and coda["max_train_steps"] == 200 and coda["seed"] == 0
    ptq = plan["ptq-1x-quantile"].config
    assert ptq["max_train_steps"] == 0 and ptq["quantizer"] == {"name": "quantile", "bins": 4, "distribution": "empirical",
                                                                 "refine_iters": 0}  # fmt: skip
    screen = plan["msvqgan-screen-base"].config
    assert screen["max_train_steps"] == 400 and screen["quantizer"]["quantizer_kwargs"]["restart_after"] == 20
    assert plan["msvqgan-screen-lr3e-3"].config["learning_rate"] == 3e-3
    assert plan["msvqgan-screen-ema"].config["quantizer"]["quantizer_kwargs"]["use_ema"] is True
    bpp = {name: _bits_per_pixel(plan[name].config, 64) for name in ("coda-4x-lr0.001", "ptq-1x-quantile", "msvqgan-screen-base")}
    assert bpp == pytest.approx({"coda-4x-lr0.001": 680 * 12 / 4096, "ptq-1x-quantile": 2.0, "msvqgan-screen-base": 680 * 12 / 4096})
    # rows that wait for a choice have no config until it is made; then they take it
    with pytest.raises(FileNotFoundError, match="select-msvqgan"):
        plan["vqgan-f2-s0"].make_config()
    selection = tmp_path / "selection"
    selection.mkdir()
    (selection / "msvqgan-screen.json").write_text(json.dumps({"chosen": ["lr3e-3", "base"]}))
    (selection / "msvqgan.json").write_text(json.dumps({"chosen": "final1"}))
    f2 = plan["vqgan-f2-s1"].make_config()
    assert f2["seed"] == 1 and f2["learning_rate"] == 3e-3 and f2["max_train_steps"] == 1200
    assert f2["model_kwargs"]["block_out_channels"] == [32, 64] and _bits_per_pixel(f2, 64) == 2.0
    assert plan["msvqgan-final2"].make_config()["learning_rate"] == 1e-3  # the second best of the screen, at 6N
    evals = [i for i, n in enumerate(names) if n.startswith("eval-")]
    choices = [i for i, n in enumerate(names) if not n.startswith("eval-") and n != "report"]
    assert max(choices) < min(evals) and names[-1] == "report"
    assert {"eval-coda-4x-s0", "eval-coda-4x-s2", "eval-vqgan-f2-s2", "eval-ptq-1x-b8", "eval-vae-1x"} <= set(names)
    assert "--split" in plan["val-coda-4x-lr0.001"].command and "validation" in plan["val-coda-4x-lr0.001"].command
    assert plan["eval-coda-4x-s0"].command[plan["eval-coda-4x-s0"].command.index("--split") + 1] == "eval"
    assert repro.main(["--workdir", str(tmp_path / "w"), "--config", "cpu-latent16-fair", "--dry-run",
                       "--only", "msvqgan-*", "vqgan-f2-*"]) == 0  # fmt: skip


def test_a_lever_is_the_chosen_coda_row_with_one_change_read_on_validation_beside_its_references(repro, tmp_path):
    hw = repro.CONFIGS["cpu-latent16-fair"]
    plan = {s.name: s for s in repro.build_plan(tmp_path, "cpu-latent16-fair", tmp_path / "debs")}
    levers = [n for n in plan if "-lever-" in n and not n.startswith("val-")]
    assert levers == [f"coda-4x-lever-{name}" for name in hw["coda_levers"]]  # 4x only (lever_vaes)
    base = plan["coda-4x-lr0.01"].config
    perc = plan["coda-4x-lever-perc1"]
    assert perc.needs == ("data", "vae-4x-stats", "select-coda-4x") and perc.config["perceptual_weight"] == 1.0
    assert {k: v for k, v in perc.config.items() if k not in ("perceptual_weight", "output_dir", "learning_rate")} == {
        k: v for k, v in base.items() if k not in ("perceptual_weight", "output_dir", "learning_rate")}
    (tmp_path / "selection").mkdir()
    (tmp_path / "selection" / "coda-4x.json").write_text(json.dumps({"chosen": "0.003"}))
    assert perc.make_config()["learning_rate"] == 3e-3  # the chosen LoRA rate ...
    enc = plan["coda-4x-lever-enc8-lr1e-3"]  # ... unless the lever sets its own
    assert enc.make_config is None and enc.config["learning_rate"] == 1e-3
    assert enc.config["model_kwargs"]["lora"]["encoder"] == {"rank": 8}
    assert plan["coda-4x-lever-gan0.5"].config["gan_weight"] == 0.5
    for run, producer in (("coda-4x-lever-perc1", "coda-4x-lever-perc1"), ("vae-4x", "vae-4x-stats"), ("vqgan-f2-s0", "vqgan-f2-s0")):
        val = plan[f"val-{run}"]
        assert val.needs == (producer,) and val.command[val.command.index("--split") + 1] == "validation"
    assert not [n for n in plan if n.startswith("eval-") and "lever" in n]  # the eval split never sees a lever


def test_the_report_runs_again_once_the_plan_gains_a_run(repro, tmp_path):
    import fair_plan

    hw = repro.CONFIGS["smoke-fair"]
    runs = fair_plan.reported_runs(hw)
    assert {"coda-1x-s1", "msvqgan-s2", "coda-1x-k8", "coda-1x-lever-l1"} <= set(runs) and "coda-1x-lr0.001" not in runs
    marker = fair_plan.report_marker(tmp_path, hw)
    assert marker == fair_plan.report_marker(tmp_path, dict(hw))  # the same plan: the same marker
    more = {**hw, "coda_levers": {**hw["coda_levers"], "new": {"l1_weight": 2.0}}}
    assert fair_plan.report_marker(tmp_path, more) != marker
    plan = repro.build_plan(tmp_path, "smoke-fair", tmp_path, overrides={"coda_levers": more["coda_levers"]})
    assert plan[-1].name == "report" and plan[-1].done_marker == fair_plan.report_marker(tmp_path, more)


def test_photos_without_a_validation_split_are_refused(repro, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "manifest.json").write_text(json.dumps({"config": {"sources": ["opencv-doc", "skimage"]},
                                                      "groups": {"train": ["a"], "eval": ["b"]}}))  # fmt: skip
    with pytest.raises(ValueError, match="has no validation split"):
        repro.build_plan(tmp_path, "cpu-latent16-fair", tmp_path, photos=photos)


def _metrics(psnr: float, fd: float, bpp: float = 2.0) -> str:
    return json.dumps({"psnr": psnr, "ssim": 0.7, "fd_effnet": fd, "bits_per_pixel": bpp, "utilization": 1.0})


def test_select_reads_the_validation_split_and_links_the_best_run(repro, tmp_path):
    import fair_plan

    for run, psnr, fd in (("c-a", 20.0, 150.0), ("c-b", 21.0, 160.0), ("c-c", 21.0, 140.0)):
        (tmp_path / "validation" / run).mkdir(parents=True)
        (tmp_path / "validation" / run / "metrics.json").write_text(_metrics(psnr, fd))
        (tmp_path / "runs" / run).mkdir(parents=True)
        (tmp_path / "eval" / run).mkdir(parents=True)
        (tmp_path / "eval" / run / "metrics.json").write_text(_metrics(99.0 if run == "c-a" else 1.0, 1.0))  # never read
    fair_plan.select(tmp_path, "c", {"a": "c-a", "b": "c-b", "c": "c-c"}, "c-s0")
    record = json.loads((tmp_path / "selection" / "c.json").read_text())
    assert record["chosen"] == "c" and record["ranking"] == ["c", "b", "a"]  # PSNR, then the lower FD-EffNet
    assert (tmp_path / "runs" / "c-s0").resolve() == (tmp_path / "runs" / "c-c").resolve()
    fair_plan.select(tmp_path, "top", {"a": "c-a", "b": "c-b", "c": "c-c"}, None, keep=2)
    assert json.loads((tmp_path / "selection" / "top.json").read_text())["chosen"] == ["c", "b"]


def test_report_gives_mean_std_over_seeds_and_claims_only_beyond_the_noise(repro, tmp_path):
    import fair_report

    hw = repro.CONFIGS["smoke-fair"]
    figures = {"coda-1x": [(22.0, 100.0), (22.2, 104.0)], "msvqgan": [(21.0, 110.0), (21.4, 150.0)],
               "vqgan-f2": [(22.1, 90.0), (22.3, 92.0)], "ptq-1x": [(18.0, 200.0), (18.0, 201.0)]}  # fmt: skip
    for row, values in figures.items():
        for seed, (psnr, fd) in enumerate(values):
            out = tmp_path / "eval" / f"{row}-s{seed}"
            out.mkdir(parents=True)
            (out / "metrics.json").write_text(_metrics(psnr, fd, 1.99 if row != "vqgan-f2" else 2.0))
    (tmp_path / "eval" / "vae-1x").mkdir(parents=True)
    (tmp_path / "eval" / "vae-1x" / "metrics.json").write_text(json.dumps({"psnr": 23.0, "fd_effnet": 80.0}))
    for run, cpu in (("coda-1x-s0", False), ("coda-1x-s1", False), ("msvqgan-s0", False), ("msvqgan-s1", True)):
        (tmp_path / "runs" / run).mkdir(parents=True)
        (tmp_path / "runs" / run / "training_config.json").write_text(json.dumps({"cpu": cpu}))
    invocations = [{"machine": "gpu box", "torch": "2.11.0+cu130", "torch_threads": 1},
                   {"machine": "laptop", "torch": "2.13.0+cpu", "torch_threads": 2}]  # fmt: skip
    (tmp_path / "invocations.json").write_text(json.dumps(invocations))
    results = fair_report.write_report(tmp_path, hw)
    assert results["rows"]["coda-1x"]["trained_on"] == ["GPU"] and results["rows"]["msvqgan"]["trained_on"] == ["CPU", "GPU"]
    assert "trained_on" not in results["rows"]["ptq-1x"]  # no saved training config: not claimed
    coda = results["rows"]["coda-1x"]
    assert coda["psnr"] == pytest.approx(22.1) and coda["psnr_std"] == pytest.approx(math.sqrt(0.02))
    assert coda["seeds_done"] == 2 and not coda["missing"]
    assert results["rows"]["ptqlora-1x"]["missing"] == ["ptqlora-1x-s0", "ptqlora-1x-s1"]
    c = results["comparisons"]
    assert c["coda-1x vs msvqgan"]["psnr"]["verdict"] == "A"  # +0.9 dB against a combined std of 0.32
    assert c["coda-1x vs msvqgan"]["fd_effnet"]["verdict"] == "within noise"  # -28 against 28.4: within the noise
    assert c["coda-1x vs vqgan-f2"]["psnr"]["verdict"] == "within noise" and c["coda-1x vs vqgan-f2"]["matched_bpp"]
    assert c["coda-1x vs vqgan-f2"]["fd_effnet"]["verdict"] == "B"
    assert c["coda-1x vs ptqlora-1x"]["verdict"] == "missing"
    report = (tmp_path / "results.md").read_text()
    assert "| coda-1x | 1x | 1.990 | 2/2 | 22.10 +- 0.14 |" in report and "0/2 (missing)" in report
    assert "| - | - | GPU |" in report and "| - | - | CPU, GPU |" in report  # steps, train s (none timed), trained on
    assert "- gpu box, torch 2.11.0+cu130" in report and "- laptop, torch 2.13.0+cpu" in report
    import plot_frontier

    assert plot_frontier.plot(results, tmp_path / "f.png").stat().st_size > 1000


def test_report_sets_each_lever_beside_the_chosen_row_the_vae_and_the_f2_vqgan_on_validation(repro, tmp_path):
    import fair_report

    hw = repro.CONFIGS["smoke-fair"]
    for run, psnr, fd in (("coda-1x-lr0.001", 22.0, 140.0), ("coda-1x-lever-l1", 21.5, 131.5), ("vae-1x", 23.0, 120.0),
                          ("vqgan-f2-s0", 20.0, 110.0), ("coda-1x-lever-lr", 99.0, 1.0)):  # fmt: skip
        (tmp_path / "validation" / run).mkdir(parents=True)
        (tmp_path / "validation" / run / "metrics.json").write_text(_metrics(psnr, fd))
    (tmp_path / "eval" / "coda-1x-lever-lr").mkdir(parents=True)  # eval figures of a lever are never read
    (tmp_path / "eval" / "coda-1x-lever-lr" / "metrics.json").write_text(_metrics(0.0, 999.0))
    (tmp_path / "validation" / "coda-1x-lever-lr" / "metrics.json").unlink()  # not validated yet: left out
    (tmp_path / "selection").mkdir()
    (tmp_path / "selection" / "coda-1x.json").write_text(json.dumps(
        {"chosen": "0.001", "runs": {"0.001": "coda-1x-lr0.001"}, "validation": {"0.001": {"psnr": 22.0, "fd_effnet": 140.0}}}))
    results = fair_report.write_report(tmp_path, hw)
    table = results["levers"]["1x"]
    assert list(table) == ["chosen (coda-1x-lr0.001)", "l1", "vae-1x", "vqgan-f2-s0"]
    assert table["l1"]["psnr"] == 21.5 and table["vqgan-f2-s0"]["fd_effnet"] == 110.0
    report = (tmp_path / "results.md").read_text()
    assert "CODA levers, VAE 1x, on the validation split" in report
    assert '| l1 | `{"l1_weight": 0.5}` | 21.50 | 131.5 | -0.50 | -8.5 |' in report
    assert "| vqgan-f2-s0 | `-` | 20.00 | 110.0 | -2.00 | -30.0 |" in report


def _in_process(command: list[str]) -> None:
    """A stage's command (``train_tokenizer.py --config F`` or ``python -m coda_hf.cli ...``) in this process.
    The commands themselves, as subprocesses, are what test_data_prep's smoke run of reproduce.py runs."""
    from accelerate.state import AcceleratorState

    from coda_hf.cli import main as cli_main
    from coda_hf.training import main as train_main

    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        if command[1:3] == ["-m", "coda_hf.cli"]:
            assert cli_main(command[3:]) == 0
        else:
            assert command[1].endswith("train_tokenizer.py")
            train_main(command[2:])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_every_stage_of_the_fair_plan_needs_only_earlier_stages(repro, tmp_path):
    """``--jobs`` starts a stage once its ``needs`` have finished: each need is an earlier stage, every choice
    waits on the validation runs it reads, and every evaluation on the stage that makes its run."""
    for config in ("cpu-latent16-fair", "smoke-fair"):
        stages = repro.build_plan(tmp_path / config, config, tmp_path)
        names = [s.name for s in stages]
        for i, stage in enumerate(stages[:-1]):
            assert stage.needs is not None and set(stage.needs) <= set(names[:i]), (config, stage.name)
        assert stages[-1].name == "report" and stages[-1].needs is None  # the report waits on everything
        by_name = {s.name: s for s in stages}
        assert set(by_name["select-coda-1x"].needs) == {n for n in names if n.startswith("val-coda-1x-lr")}
        assert by_name["coda-1x-s1"].needs == ("data", "vae-1x-stats", "select-coda-1x")
        assert by_name["eval-coda-1x-s0"].needs == ("select-coda-1x",)  # s0 is the chosen candidate's link
        assert by_name["eval-coda-1x-s1"].needs == ("coda-1x-s1",)
        assert by_name["eval-vae-1x"].needs == ("vae-1x-stats",)
        assert "select-ptq-1x" in by_name["ptqlora-1x-s1"].needs and "select-msvqgan" in by_name["vqgan-f2-s0"].needs


def _stage(repro, work: Path, name: str, code: str, needs=None):
    """A command stage that runs ``code`` (python) and then writes its done marker ``WORK/<name>.done``."""
    marker = work / f"{name}.done"
    command = [sys.executable, "-c", f"import time, pathlib; {code}; pathlib.Path({str(marker)!r}).write_text(str(time.time()))"]
    return repro.Stage(name, marker, command, needs=needs)


def test_jobs_run_stages_side_by_side_after_their_needs_and_go_on_past_a_failure(repro, tmp_path):
    import subprocess

    work = tmp_path / "work"
    work.mkdir()
    stages = [
        _stage(repro, work, "slow", "time.sleep(1.0)", needs=()),
        _stage(repro, work, "broken", "print('boom'); raise SystemExit(3)", needs=()),
        _stage(repro, work, "after-slow", "pass", needs=("slow",)),
        _stage(repro, work, "after-broken", "pass", needs=("broken",)),
        _stage(repro, work, "after-after-broken", "pass", needs=("after-broken",)),
        _stage(repro, work, "free", "pass", needs=()),
    ]
    with pytest.raises(subprocess.CalledProcessError) as failure:
        repro.run_plan(stages, work, jobs=3)
    assert failure.value.returncode == 3 and failure.value.cmd == stages[1].command
    done = {s.name: float(s.done_marker.read_text()) for s in stages if s.done_marker.is_file()}
    assert set(done) == {"slow", "after-slow", "free"}  # the failure's dependants did not run; the rest did
    assert done["free"] < done["slow"] < done["after-slow"]  # "free" did not wait for "slow" (3 at once)
    assert "boom" in (work / "logs" / "broken.log").read_text()
    timings = json.loads((work / "timings.json").read_text())
    assert set(timings) == {"slow", "broken", "after-slow", "free"} and timings["slow"] >= 1.0
    assert repro.run_plan([stages[0], stages[2], stages[5]], work, jobs=3) == []  # what finished is not run again


def test_jobs_skip_a_stage_that_another_invocation_finished_meanwhile(repro, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    later = _stage(repro, work, "later", "raise SystemExit(9)", needs=("first",))  # would fail if it ran
    first = _stage(repro, work, "first", f"pathlib.Path({str(later.done_marker)!r}).write_text('0')", needs=())
    assert repro.run_plan([first, later], work, jobs=2) == ["first"]


def test_jobs_keep_the_plan_order_where_a_stage_names_no_needs(repro, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    stages = [_stage(repro, work, "first", "time.sleep(0.5)"), _stage(repro, work, "second", "pass")]
    assert repro.run_plan(stages, work, jobs=2) == ["first", "second"]
    assert float(stages[0].done_marker.read_text()) < float(stages[1].done_marker.read_text())


def test_jobs_must_be_positive(repro, tmp_path, capsys):
    with pytest.raises(SystemExit):
        repro.main(["--workdir", str(tmp_path), "--config", "smoke-fair", "--jobs", "0", "--dry-run"])
    assert "--jobs takes a positive number" in capsys.readouterr().err


def _saved_model(folder: Path, **config) -> Path:
    """A stand-in saved model: config.json and a weights file (adoption reads the one, hashes the other)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", **config}))
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    return folder


def test_adopt_copies_a_model_trained_elsewhere_into_its_stage_with_provenance(repro, tmp_path, caplog):
    import hashlib

    work = tmp_path / "work"
    kwargs = {s.name: s for s in repro.build_plan(work, "cpu-latent16-fair", tmp_path / "debs")}["vae-4x"].config["model_kwargs"]
    source = _saved_model(tmp_path / "elsewhere", **kwargs, scaling_factor=1.5)
    argv = ["--workdir", str(work), "--config", "cpu-latent16-fair", "--adopt", f"vae-4x={source}", "--only", "vae-4x"]
    assert repro.main([*argv, "--dry-run"]) == 0 and not (work / "runs" / "vae-4x").exists()  # checked, not copied
    assert repro.main(argv) == 0
    run = work / "runs" / "vae-4x"
    assert json.loads((run / "config.json").read_text())["scaling_factor"] == 1.5
    provenance = json.loads((run / "provenance.json").read_text())
    assert provenance["copied_from"] == str(source) and provenance["weights_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert json.loads((run / "training_summary.json").read_text()) == {"adopted_from": str(source), "global_step": None}
    assert not (work / "logs" / "vae-4x.log").exists()  # skipped as complete, not trained
    (source / "config.json").write_text(json.dumps({**kwargs, "scaling_factor": 9.0}))
    caplog.set_level("INFO")
    assert repro.main(argv) == 0  # a complete run is left as it is
    assert "already complete" in caplog.text and json.loads((run / "config.json").read_text())["scaling_factor"] == 1.5
    import fair_report  # the report: the row is marked copied, with no step count and no device of its own

    (work / "eval" / "vae-4x").mkdir(parents=True)
    (work / "eval" / "vae-4x" / "metrics.json").write_text(json.dumps({"psnr": 24.0, "fd_effnet": 100.0}))
    results = fair_report.write_report(work, repro.CONFIGS["cpu-latent16-fair"])
    row = results["rows"]["vae-4x"]
    assert row["trained_elsewhere"]["vae-4x"] == provenance and "train_steps" not in row and "trained_on" not in row
    report = (work / "results.md").read_text()
    assert f"- vae-4x: {source} (reproduce.py --adopt, weights SHA-256 {provenance['weights_sha256'][:12]})" in report
    assert "| vae-4x | 4x | - | 1/1 (copied) | 24.00 | - | 100.0 | - | - | - | - |" in report


def test_adopt_refuses_another_architecture_a_started_run_and_a_stage_that_does_not_train(repro, tmp_path, capsys):
    work = tmp_path / "work"
    kwargs = {s.name: s for s in repro.build_plan(work, "cpu-latent16-fair", tmp_path / "debs")}["vae-4x"].config["model_kwargs"]
    base = ["--workdir", str(work), "--config", "cpu-latent16-fair", "--only", "vae-4x", "--adopt"]
    wide = _saved_model(tmp_path / "wide", **{**kwargs, "latent_channels": 4})
    good = _saved_model(tmp_path / "good", **kwargs)
    with pytest.raises(SystemExit):  # a dry run checks too
        repro.main([*base, f"vae-4x={wide}", "--dry-run"])
    assert "latent_channels: stage 16" in capsys.readouterr().err
    for item, message in ((f"vae-4x={wide}", "latent_channels: stage 16"), (f"vae-4x={tmp_path}", "no saved model there"),
                          (f"eval-vae-4x={good}", "a training stage of this plan"), (str(good), "RUN=DIR")):  # fmt: skip
        with pytest.raises(SystemExit):
            repro.main([*base, item])
        assert message in capsys.readouterr().err
    (work / "runs" / "vae-4x" / "checkpoints").mkdir(parents=True)  # a training that has started
    with pytest.raises(SystemExit):
        repro.main([*base, f"vae-4x={good}"])
    assert "has not finished" in capsys.readouterr().err
    assert not (work / "runs" / "vae-4x" / "config.json").exists()


def _smoke_photos(tmp_path: Path) -> Path:
    """Generated 32 px tiles with train / validation / eval splits."""
    import datasets
    import numpy as np
    from PIL import Image

    from coda_hf.data.shards import encode_png, write_parquet_shards

    photos = tmp_path / "photos"
    rng = np.random.default_rng(0)
    features = datasets.Features({"image": datasets.Image()})
    for split, n in (("train", 8), ("validation", 3), ("eval", 3)):
        tiles = [encode_png(Image.fromarray((rng.random((32, 32, 3)) * 255).astype("uint8"))) for _ in range(n)]
        write_parquet_shards({"image": tiles}, features, photos / "tiles32", split, num_shards=1)
    (photos / "manifest.json").write_text("{}")
    return photos


@pytest.mark.slow
def test_smoke_fair_runs_every_stage_and_reports(repro, tmp_path, monkeypatch):
    """The whole equal-bits plan, 2 steps per stage, on generated tiles with a validation split."""
    photos = _smoke_photos(tmp_path)
    work = tmp_path / "work"
    argv = ["--workdir", str(work), "--config", "smoke-fair", "--photos", str(photos), "--vae-photos", str(photos)]
    monkeypatch.setattr(repro, "run_stage_command", _in_process)  # ~45 stages: no interpreter start for each
    assert repro.main(argv) == 0
    results = json.loads((work / "results.json").read_text())
    for row in ("coda-1x", "ptq-1x", "ptqlora-1x", "msvqgan", "vqgan-f2"):
        assert results["rows"][row]["seeds_done"] == 2 and results["rows"][row]["bits_per_pixel"] > 0, row
    assert results["rows"]["ptq-1x"]["train_steps"] == 0 and results["rows"]["msvqgan"]["train_steps"] == 12
    assert all(row["seeds_done"] == 1 for row in results["frontier"].values())
    assert set(results["selections"]) == {"coda-1x", "ptq-1x", "ptqlora-1x", "msvqgan-screen", "msvqgan"}
    assert set(results["levers"]["1x"]) == {f"chosen (coda-1x-lr{hw_rate:g})" for hw_rate in repro.CONFIGS["smoke-fair"]["lora_rates"]} | {
        "l1", "lr", "vae-1x", "vqgan-f2-s0"}
    import fair_plan

    assert (work / "frontier.png").is_file() and fair_plan.report_marker(work, repro.CONFIGS["smoke-fair"]).is_file()
    invocation = json.loads((work / "invocations.json").read_text())[0]
    assert invocation["torch_threads"] >= 1 and "omp_num_threads" in invocation
    stages = repro.build_plan(work, "smoke-fair", work, photos=photos, vae_photos=photos)
    assert repro.run_plan(stages, work) == []  # a second invocation finds everything done


@pytest.mark.slow
def test_smoke_fair_with_jobs_runs_stages_as_their_own_processes(repro, tmp_path):
    """``--jobs 3`` on the CODA branch of the smoke plan: each stage a real command (train_tokenizer.py, the
    CLI) beside others, the choice after its validation runs, the evaluations after the choice."""
    photos = _smoke_photos(tmp_path)
    work = tmp_path / "work"
    only = ["vae-1x*", "coda-1x-lr*", "val-coda-1x-lr*", "select-coda-1x", "coda-1x-s1", "eval-coda-1x-s*", "eval-vae-1x"]
    argv = ["--workdir", str(work), "--config", "smoke-fair", "--photos", str(photos), "--vae-photos", str(photos),
            "--jobs", "3", "--only", *only]  # fmt: skip
    assert repro.main(argv) == 0
    for run in ("vae-1x", "coda-1x-s0", "coda-1x-s1"):
        assert json.loads((work / "eval" / run / "metrics.json").read_text())["psnr"] > 0, run
    assert (work / "runs" / "coda-1x-s0").is_symlink() and (work / "logs" / "coda-1x-s1.log").is_file()
    timings = json.loads((work / "timings.json").read_text())
    assert {"vae-1x", "select-coda-1x", "coda-1x-s1", "eval-coda-1x-s1"} <= set(timings)
    stages = repro.build_plan(work, "smoke-fair", work, photos=photos, vae_photos=photos)
    assert repro.run_plan([s for s in stages if s.name in timings], work, jobs=3) == []  # all done: nothing runs
