#!/usr/bin/env python
"""Compare two reproductions' metrics run by run: is a rerun the same, to every digit or to the reported ones?

Reads the ``results.json`` of two ``reproduce.py`` workdirs (or ``metrics.json`` files given as
``--extra RUN=FILE`` for single reruns) and prints, per run and metric, both values, their difference and
whether they agree exactly and at the digits the report shows (4 significant digits, as ``results.md``).

    python benchmarks/compare_reproductions.py \\
        --landed benchmarks/results/cpu-latent16-offdomain/results.json \\
        --rerun benchmarks/results/cpu-latent16-offdomain-rerun/results.json \\
        --extra coda-reference-path=benchmarks/results/cpu-latent16-offdomain-rerun/reference-path/coda-metrics.json
"""

from __future__ import annotations

import argparse
import json

METRICS = ("psnr", "ssim", "fd_effnet", "utilization", "perplexity")


def runs(path: str) -> dict[str, dict]:
    data = json.loads(open(path).read())
    return data.get("runs", data)


def compare(landed: dict, rerun: dict) -> list[dict]:
    """One row per (run, metric) present in both: values, difference, exact / reported-digit agreement."""
    rows = []
    for run in landed:
        for metric in METRICS:
            a, b = landed[run].get(metric), rerun.get(run, {}).get(metric)
            if a is None or b is None:
                continue
            rows.append({"run": run, "metric": metric, "landed": a, "rerun": b, "difference": b - a,
                         "exact": a == b, "reported_digits": f"{a:.4g}" == f"{b:.4g}"})  # fmt: skip
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| run | metric | landed | rerun | difference | same bits | same reported digits |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['metric']} | {r['landed']:.10g} | {r['rerun']:.10g} | {r['difference']:.3g} | "
                     f"{'yes' if r['exact'] else 'no'} | {'yes' if r['reported_digits'] else 'no'} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--landed", required=True, help="results.json of the reference reproduction")
    p.add_argument("--rerun", required=True, help="results.json of the rerun")
    p.add_argument("--extra", nargs="*", default=[], metavar="RUN=FILE",
                   help="a metrics.json compared with the landed row RUN's prefix (before the first '-')")  # fmt: skip
    args = p.parse_args(argv)
    landed, rerun = runs(args.landed), runs(args.rerun)
    rows = compare(landed, rerun)
    for item in args.extra:
        name, _, path = item.partition("=")
        base = name.split("-")[0]
        extra = compare({name: landed[base]}, {name: json.loads(open(path).read())})
        rows += extra
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main()
