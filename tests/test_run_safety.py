"""A stage dies with its orchestrator (benchmarks/reproduce.py), and one live trainer per output directory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _helpers_training import script_env
from accelerate.state import AcceleratorState

from coda_hf.training import OutputDirInUseError, TrainingConfig, train
from coda_hf.training.maskgit_trainer import MaskGitTrainingConfig, train_maskgit
from coda_hf.training.run_lock import LOCK_NAME

ROOT = Path(__file__).resolve().parents[1]
RUN_LOCK = ROOT / "src" / "coda_hf" / "training" / "run_lock.py"

# A stage that records its pid and would run for two minutes.
STAGE = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
# The orchestrator: benchmarks/reproduce.py's run_plan on one such stage.
ORCHESTRATOR = textwrap.dedent(
    """
    import importlib.util, sys
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("coda_reproduce", sys.argv[1])
    repro = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = repro
    spec.loader.exec_module(repro)
    work, pid_file = Path(sys.argv[2]), sys.argv[3]
    stage = repro.Stage("vq", work / "runs" / "vq" / "training_summary.json", [sys.executable, "-c", {stage!r}, pid_file])
    print("ran", repro.run_plan([stage], work), flush=True)
    """
).format(stage=STAGE)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has exited (its reaper may be slow)


def _wait_for(predicate, timeout: float = 60.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _start_orchestrator(tmp_path):
    pid_file = tmp_path / "stage.pid"
    proc = subprocess.Popen([sys.executable, "-c", ORCHESTRATOR, str(ROOT / "benchmarks" / "reproduce.py"),
                             str(tmp_path / "work"), str(pid_file)], env=script_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert _wait_for(lambda: pid_file.is_file() and pid_file.read_text()), proc.communicate(timeout=5)
    return proc, int(pid_file.read_text())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups / parent-death signal: Linux")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stage_dies_with_its_orchestrator(tmp_path, sig):
    orchestrator, stage_pid = _start_orchestrator(tmp_path)
    try:
        assert _alive(stage_pid)
        orchestrator.send_signal(sig)
        _, stderr = orchestrator.communicate(timeout=60)
        assert orchestrator.returncode == 128 + sig, stderr[-2000:]
        assert f"stopped by signal {int(sig)}" in stderr
        assert _wait_for(lambda: not _alive(stage_pid), 10), "the stage outlived its orchestrator"
        assert (tmp_path / "work" / "timings.json").is_file()  # the stage's wall time is still counted
    finally:
        if _alive(stage_pid):
            os.kill(stage_pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_stage_dies_with_a_sigkilled_orchestrator(tmp_path):
    orchestrator, stage_pid = _start_orchestrator(tmp_path)
    try:
        orchestrator.kill()
        orchestrator.communicate(timeout=30)
        assert _wait_for(lambda: not _alive(stage_pid), 10), "the stage outlived its SIGKILLed orchestrator"
    finally:
        if _alive(stage_pid):
            os.kill(stage_pid, signal.SIGKILL)


# ------------------------------------------------------------------------------------ output directory lock
HOLDER = textwrap.dedent(
    """
    import importlib.util, sys, time
    spec = importlib.util.spec_from_file_location("run_lock", sys.argv[1])
    run_lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_lock)
    with run_lock.hold_output_dir(sys.argv[2]):
        print("held", flush=True)
        time.sleep(120)
    """
)


def _hold_in_another_process(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(RUN_LOCK), str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _tokenizer_config(out: Path) -> TrainingConfig:
    return TrainingConfig(model="vae", train_data_dir=str(out.parent / "no-such-images"), output_dir=str(out),
                          cpu=True, report_to="none")  # fmt: skip


def _maskgit_config(out: Path) -> MaskGitTrainingConfig:
    return MaskGitTrainingConfig(tokenizer=str(out.parent / "no-such-tokenizer"), output_dir=str(out),
                                 train_data_dir=str(out.parent / "no-such-images"), report_to="none")  # fmt: skip


@pytest.mark.parametrize("trainer", ["tokenizer", "maskgit"])
def test_a_second_trainer_on_a_held_output_dir_stops_at_once(tmp_path, trainer):
    out = tmp_path / "run"
    config, run = (_tokenizer_config(out), train) if trainer == "tokenizer" else (_maskgit_config(out), train_maskgit)
    holder = _hold_in_another_process(out)
    try:
        start = time.perf_counter()
        with pytest.raises(OutputDirInUseError, match=rf"pid {holder.pid} on host {socket.gethostname()}"):
            run(config)
        assert time.perf_counter() - start < 10  # before any data or model is loaded
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written into the held run
    finally:
        holder.kill()  # SIGKILL: no chance to clean up
        holder.wait()
    # The kernel dropped the dead holder's lock: the next trainer gets past it (and fails on the missing data).
    AcceleratorState._reset_state(reset_partial_state=True)
    with pytest.raises((FileNotFoundError, OSError, ValueError)) as failure:
        run(config)
    assert not isinstance(failure.value, OutputDirInUseError) and "no-such" in str(failure.value)
