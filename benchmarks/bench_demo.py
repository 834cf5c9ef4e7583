#!/usr/bin/env python
"""Wall time of ``coda-hf demo`` as a new user runs it: a fresh process, no flags, offline.

Each repeat runs ``coda-hf demo --output-dir <new temporary folder>`` in a new Python process (imports, model
loading, the whole demo, writing the files) and times it from outside; the machine's load average before each
run is recorded next to it (other jobs on a shared machine slow torch down a lot).

    python benchmarks/bench_demo.py --repeats 3
    python benchmarks/bench_demo.py --repeats 3 --threads 1 --output benchmarks/results/bundled/demo_time.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def time_demo(threads: int | None = None, output_dir: str | Path | None = None) -> dict:
    """One fresh ``coda-hf demo`` process (into ``output_dir``, default a temporary folder): its wall seconds,
    the load average before it, its own timing of the work and its printed summary (``stdout``)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(output_dir or f"{tmp}/demo")
        load = os.getloadavg()
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "coda_hf.cli", "demo", "--output-dir", str(out), "--no-progress"],
                              env=env, check=True, capture_output=True, text=True)  # fmt: skip
        wall = time.perf_counter() - start
        report = json.loads((out / "metrics.json").read_text())
    return {"wall_s": round(wall, 2), "demo_work_s": report["wall_s"], "torch_threads": report["torch_threads"],
            "load_average_before": [round(v, 2) for v in load], "stdout": done.stdout}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="fresh processes to time")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the demo (default: torch's own choice)")
    p.add_argument("--output", default=None, help="write the runs as JSON here")
    args = p.parse_args(argv)
    runs = [{k: v for k, v in time_demo(args.threads).items() if k != "stdout"} for _ in range(args.repeats)]
    walls = [r["wall_s"] for r in runs]
    summary = {
        "command": "coda-hf demo --output-dir OUT", "runs": runs, "median_wall_s": statistics.median(walls),
        "max_wall_s": max(walls), "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
    }  # fmt: skip
    print(f"coda-hf demo, {args.repeats} fresh process(es): median {summary['median_wall_s']:.1f} s, max "
          f"{summary['max_wall_s']:.1f} s ({runs[0]['torch_threads']} torch thread(s); load average before each: "
          f"{', '.join(str(r['load_average_before'][0]) for r in runs)}; {summary['machine']})")  # fmt: skip
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
