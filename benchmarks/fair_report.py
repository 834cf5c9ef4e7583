"""The report of ``reproduce.py``'s equal-bits configurations: rows as mean +- std over seeds with their bits per
pixel, the matched-bit comparisons (a win only beyond the noise), the frontier points, the choices made on the
validation split, and the threads every invocation ran with. Reads only what the stages wrote; missing runs
are marked, never filled in."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path

import fair_plan
import reproduce
import torch

METRICS = ("psnr", "ssim", "fd_effnet", "utilization", "bits_per_pixel", "tokens_per_image", "codebook_size")
LABELS = {"vae": "continuous VAE (ceiling)", "coda": "CODA (N steps)", "ptq": "quantile bins, training-free",
          "ptqlora": "quantile bins + decoder LoRA (N steps)", "msvqgan": "multi-scale VQGAN from scratch (6N)",
          "vqgan-f2": "single-scale f2 VQGAN from scratch (6N)"}  # fmt: skip
MATCHED_BPP = 0.05  # rows within 5% of each other's bits per pixel are compared


def mean_std(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))  # sample std


def _stage_of(work: Path, run: str) -> str:
    """The stage that trained ``run`` (a seed-0 run is a link to the candidate the validation chose)."""
    path = work / "runs" / run
    return os.readlink(path) if path.is_symlink() else run


def trained_on(run_dir: Path) -> str | None:
    """``"GPU"`` or ``"CPU"``: the trainer's ``cpu`` setting as its saved ``training_config.json`` records it
    (``cpu: false`` ran on the invocation's accelerator; invocations.json names the machines)."""
    config = run_dir / "training_config.json"
    if not config.is_file():
        return None
    return "CPU" if json.loads(config.read_text()).get("cpu", True) else "GPU"


def aggregate(work: Path, row: dict, timings: dict) -> dict:
    """One row: mean +- std of every metric over the runs (seeds) that have eval figures; ``missing`` names
    the runs without."""
    found, missing = [], []
    for run in row["runs"]:
        path = work / "eval" / run / "metrics.json"
        (found if path.is_file() else missing).append(run)
    out = {"method": row["method"], "vae": row["vae"], "runs": row["runs"], "seeds_done": len(found), "missing": missing}
    if not found:
        return out
    metrics = [json.loads((work / "eval" / run / "metrics.json").read_text()) for run in found]
    for key in METRICS:
        values = [m[key] for m in metrics if isinstance(m.get(key), (int, float))]
        if values:
            out[key], std = mean_std(values)
            if std is not None:
                out[f"{key}_std"] = std
    adopted = [run for run in found if (work / "runs" / run / "provenance.json").is_file()]
    if adopted:  # trained elsewhere with this stage's very config, copied in (provenance.json says from where)
        out["trained_elsewhere"] = {run: json.loads((work / "runs" / run / "provenance.json").read_text()) for run in adopted}
    steps, walls, devices = [], [], set()
    for run in found:
        summary = work / "runs" / run / "training_summary.json"
        step = json.loads(summary.read_text()).get("global_step") if summary.is_file() else None
        if step is not None:  # an adopted run's summary claims no step count
            steps.append(step)
        device = trained_on(work / "runs" / run)
        if device:
            devices.add(device)
        stage = _stage_of(work, run)
        if stage in timings:
            walls.append(timings[stage])
    if steps:
        out["train_steps"] = steps[0]
    if devices:
        out["trained_on"] = sorted(devices)
    if walls:
        out["train_wall_s"] = sum(walls) / len(walls)
    return out


def compare(a: dict, b: dict) -> dict:
    """``a`` against ``b``: the bit rates' match and, per metric, the difference of the means against the
    combined std ``sqrt(std_a^2 + std_b^2)``; a side wins only beyond it."""
    out = {"bpp": [a.get("bits_per_pixel"), b.get("bits_per_pixel")]}
    if "bits_per_pixel" not in a or "bits_per_pixel" not in b:
        return {**out, "verdict": "missing"}
    out["matched_bpp"] = abs(a["bits_per_pixel"] / b["bits_per_pixel"] - 1) <= MATCHED_BPP
    for key, higher_is_better in (("psnr", True), ("fd_effnet", False)):
        out[key] = verdict(a[key], a.get(f"{key}_std"), b[key], b.get(f"{key}_std"), higher_is_better)
    return out


def verdict(a: float, a_std: float | None, b: float, b_std: float | None, higher_is_better: bool) -> dict:
    """Mean ``a`` against mean ``b``: their difference, the combined std ``sqrt(std_a^2 + std_b^2)`` (a missing
    std counts 0) and who wins beyond it (``"A"``, ``"B"`` or ``"within noise"``)."""
    diff = a - b
    noise = math.sqrt((a_std or 0.0) ** 2 + (b_std or 0.0) ** 2)
    better = diff > noise if higher_is_better else diff < -noise
    worse = diff < -noise if higher_is_better else diff > noise
    return {"difference": diff, "combined_std": noise, "verdict": "A" if better else "B" if worse else "within noise"}


def write_report(work: Path, hw: dict) -> dict:
    """``results.json`` (rows, comparisons, selections, machine) and ``results.md`` in ``work``."""
    timings = reproduce._read_timings(work)
    rows = {name: aggregate(work, row, timings) for name, row in fair_plan.main_rows(hw).items()}
    frontier = {name: aggregate(work, row, timings) for name, row in fair_plan.frontier_rows(hw).items()}
    comparisons = {}
    for v in fair_plan.vae_names(hw):
        for rival in ("msvqgan", "vqgan-f2", f"ptq-{v}", f"ptqlora-{v}"):
            comparisons[f"coda-{v} vs {rival}"] = compare(rows[f"coda-{v}"], rows[rival])
    selections = {p.stem: json.loads(p.read_text()) for p in sorted((work / "selection").glob("*.json"))}
    invocations = json.loads((work / "invocations.json").read_text()) if (work / "invocations.json").is_file() else []
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
               "threads_per_invocation": sorted({str(i.get("torch_threads")) for i in invocations}),
               "invocation_machines": sorted({f"{i.get('machine')}, torch {i.get('torch')}" for i in invocations})}  # fmt: skip
    results = {"rows": rows, "frontier": frontier, "comparisons": comparisons, "selections": selections,
               "levers": levers(work, hw, selections), "machine": machine}  # fmt: skip
    reproduce.write_json_atomic(work / "results.json", results)
    (work / "results.md").write_text(markdown(results, hw) + "\n")
    return results


def levers(work: Path, hw: dict, selections: dict) -> dict[str, dict]:
    """``{vae: {label: validation figures}}``: the chosen CODA run, each lever, the continuous VAE and the f2
    VQGAN (seed 0) on the validation split; a run without figures yet is left out."""
    out = {}
    for v, runs in fair_plan.lever_runs(hw).items():
        selection = selections.get(f"coda-{v}", {})
        chosen = selection.get("runs", {}).get(selection.get("chosen"))  # the chosen LoRA rate's run
        named = {f"chosen ({chosen})" if chosen else "chosen": chosen, **runs, f"vae-{v}": f"vae-{v}",
                 f"vqgan-f2-s{hw['seeds'][0]}": f"vqgan-f2-s{hw['seeds'][0]}"}  # fmt: skip
        done = [r for r in named.values() if r and (work / "validation" / r / "metrics.json").is_file()]
        figures = fair_plan.validation_figures(work, done)
        out[v] = {label: {"run": run, **figures[run]} for label, run in named.items() if run in figures}
    return out


def _lever_lines(results: dict, hw: dict) -> list[str]:
    lines = []
    for v, table in results["levers"].items():
        lines += ["", f"CODA levers, VAE {v}, on the validation split (seed 0; the chosen row's recipe with the change shown; "
                  "difference to the chosen row):", "", "| run | change | PSNR (dB) | FD-EffNet | PSNR diff | FD diff |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        ref = next((f for label, f in table.items() if label.startswith("chosen")), None)
        for label, f in table.items():
            change = json.dumps(hw["coda_levers"][label], sort_keys=True) if label in hw["coda_levers"] else "-"
            diff = (f"{f['psnr'] - ref['psnr']:+.2f} | {f['fd_effnet'] - ref['fd_effnet']:+.1f}"
                    if ref is not None and "fd_effnet" in f else "- | -")  # fmt: skip
            lines.append(f"| {label} | `{change}` | {f['psnr']:.2f} | {f.get('fd_effnet', float('nan')):.1f} | {diff} |")
    return lines


def _cell(row: dict, key: str, digits: int = 2) -> str:
    if key not in row:
        return "-"
    std = row.get(f"{key}_std") if key != "bits_per_pixel" else None  # the same rate for every seed
    return f"{row[key]:.{digits}f}" + (f" +- {std:.{digits}f}" if std is not None else "")


def markdown(results: dict, hw: dict) -> str:
    lines = ["| row | VAE | bits/pixel | seeds | PSNR (dB) | SSIM | FD-EffNet | utilization | steps | train s | trained on |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in results["rows"].items():
        seeds = f"{row['seeds_done']}/{len(row['runs'])}" + (" (missing)" if row["missing"] else "")
        seeds += " (copied)" if row.get("trained_elsewhere") else ""
        lines.append(f"| {name} | {row['vae'] or '-'} | {_cell(row, 'bits_per_pixel', 3)} | {seeds} | {_cell(row, 'psnr')} | "
                     f"{_cell(row, 'ssim', 4)} | {_cell(row, 'fd_effnet', 1)} | {_cell(row, 'utilization', 4)} | "
                     f"{row.get('train_steps', '-')} | {_cell(row, 'train_wall_s', 0)} | {', '.join(row.get('trained_on', [])) or '-'} |")  # fmt: skip
    lines += ["", "| CODA vs | bits/pixel (A, B) | matched | PSNR A - B (combined std) | | FD-EffNet A - B (combined std) | |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, c in results["comparisons"].items():
        if c.get("verdict") == "missing":
            lines.append(f"| {name} | - | - | missing | | missing | |")
            continue
        who = {"A": "CODA better", "B": "rival better", "within noise": "within noise"}
        cells = [f"{c[k]['difference']:+.2f} ({c[k]['combined_std']:.2f}) | {who[c[k]['verdict']]}" for k in ("psnr", "fd_effnet")]
        lines.append(f"| {name} | {c['bpp'][0]:.3f}, {c['bpp'][1]:.3f} | {'yes' if c['matched_bpp'] else 'NO'} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    lines += ["", "Frontier points (one seed each):", "", "| row | bits/pixel | PSNR (dB) | FD-EffNet |", "|---|---|---|---|"]
    for name, row in results["frontier"].items():
        lines.append(f"| {name} | {_cell(row, 'bits_per_pixel', 3)} | {_cell(row, 'psnr')} | {_cell(row, 'fd_effnet', 1)} |"
                     if row["seeds_done"] else f"| {name} | missing | | |")  # fmt: skip
    copied = {run: p for rows in (results["rows"], results["frontier"]) for row in rows.values()
              for run, p in row.get("trained_elsewhere", {}).items()}  # fmt: skip
    if copied:
        lines += ["", "Copied runs (trained by another command with this stage's config, the paths aside; evaluated here):"]
        lines += [f"- {run}: {p.get('copied_from')} ({p.get('note', '')})" for run, p in copied.items()]
    lines += ["", "Choices on the validation split (highest PSNR; ties: lower FD-EffNet):"]
    for name, sel in results["selections"].items():
        figures = ", ".join(f"{c}: {f['psnr']:.2f} dB / {f.get('fd_effnet', float('nan')):.1f}" for c, f in sel["validation"].items())
        lines.append(f"- {name}: chose {sel['chosen']} ({figures})")
    lines += _lever_lines(results, hw)
    m = results["machine"]
    lines += ["", f"Machine: {m['platform']}, {m['cpus']} CPUs, torch {m['torch']}, torch threads per invocation: "
              f"{', '.join(m['threads_per_invocation']) or 'not recorded'} (invocations.json)."]  # fmt: skip
    if len(m.get("invocation_machines", [])) > 1:
        lines += ["", "The stages ran on several machines (invocations.json; a row's 'trained on' is its trainer's `cpu` "
                  "setting, and `train s` is wall time there):"] + [f"- {name}" for name in m["invocation_machines"]]  # fmt: skip
    return "\n".join(lines)
