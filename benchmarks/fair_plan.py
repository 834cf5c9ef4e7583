"""The plan of ``reproduce.py``'s equal-bits configurations (``"plan": "fair"``): CODA against the strongest
from-scratch tokenizer and a training-free quantizer of the same VAE, at matched bits per pixel.

Every row quantizes a 64 px tile at about 2 bits per pixel (tokens x log2(codebook) / pixels):

    coda-V        CODA on the stage-0 VAE of budget V: 680 tokens x 12 bits (1.99 bpp), N steps, LoRA rate
                  chosen on VALIDATION among ``lora_rates``
    ptq-V         the same frozen VAE, each latent channel quantized at 4 quantile bins (TokenBridge-style,
                  training-free; 16 x 16 x 16 tokens x 2 bits = 2.0 bpp), variant chosen on validation
    ptqlora-V     ptq-V + N steps of decoder LoRA (rate chosen on validation)
    msvqgan       multi-scale VQGAN from scratch with CODA's scales and codebook (1.99 bpp), 6N steps,
                  dead-code restarts; hyperparameters chosen on validation (a screen at ``vqgan_screen_steps``,
                  then the ``vqgan_finalists`` best at 6N)
    vqgan-f2      single-scale VQGAN, f2, 256 codes: 32 x 32 tokens x 8 bits (2.0 bpp), 6N steps, msvqgan's
                  hyperparameters
    vae-V         the continuous VAE (the ceiling)

each with every seed of ``seeds``, and a rate-distortion frontier (one seed): CODA at other codebook sizes
and scale lists, the quantile quantizer at other bin counts, the multi-scale VQGAN at other layouts.
Levers (``coda_levers`` on the VAEs of ``lever_vaes``, one seed, validation only): ``coda-V-lever-<name>`` is
the chosen CODA row with a change of its training config, set beside the chosen row, the continuous VAE and
the f2 VQGAN (``val-vae-V``, ``val-vqgan-f2-s0``) on the validation split.

Choices read ``WORK/validation/*/metrics.json`` only (``select-*`` stages write ``WORK/selection/*.json``
and link the chosen run as seed 0); the eval split is evaluated once, by the ``eval-*`` stages at the end.
Stage names: ``<row>-<variant>`` (a candidate), ``<row>-s<seed>``, ``val-<run>``, ``eval-<run>``; the
``report`` stage writes ``results.json``, ``results.md`` and ``frontier.png`` (``benchmarks/plot_frontier.py``)
from whatever has finished, and runs again on every invocation until no run is missing (and again once the
plan gains a run, such as a new lever).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import reproduce
from reproduce import Stage

# -- the rows ------------------------------------------------------------------------------------------


def vae_names(hw: dict) -> list[str]:
    return list(hw["vae_budgets"])


def main_rows(hw: dict) -> dict[str, dict]:
    """``{row: {"method", "vae", "runs"}}`` of the main table (every seed)."""
    seeds = hw["seeds"]
    rows = {}
    for v in vae_names(hw):
        rows[f"vae-{v}"] = {"method": "vae", "vae": v, "runs": [f"vae-{v}"]}
        for method in ("coda", "ptq", "ptqlora"):
            rows[f"{method}-{v}"] = {"method": method, "vae": v, "runs": [f"{method}-{v}-s{s}" for s in seeds]}
    for method in ("msvqgan", "vqgan-f2"):
        rows[method] = {"method": method, "vae": None, "runs": [f"{method}-s{s}" for s in seeds]}
    return rows


def frontier_rows(hw: dict) -> dict[str, dict]:
    """``{row: {"method", "vae", "runs"}}`` of the extra rate-distortion points (one seed)."""
    rows = {}
    for v in vae_names(hw):
        for layout in hw["coda_frontier"]:
            rows[f"coda-{v}-{layout}"] = {"method": "coda", "vae": v, "runs": [f"coda-{v}-{layout}"]}
        for bins in hw["ptq_frontier_bins"]:
            rows[f"ptq-{v}-b{bins}"] = {"method": "ptq", "vae": v, "runs": [f"ptq-{v}-b{bins}"]}
    for layout in hw["vqgan_frontier"]:
        rows[f"msvqgan-{layout}"] = {"method": "msvqgan", "vae": None, "runs": [f"msvqgan-{layout}"]}
    return rows


def eval_runs(hw: dict) -> list[str]:
    """The runs of the main rows and the frontier, in plan order: the ones the eval split sees."""
    return list(dict.fromkeys(r for rows in (main_rows(hw), frontier_rows(hw)) for row in rows.values() for r in row["runs"]))


def lever_runs(hw: dict) -> dict[str, dict[str, str]]:
    """``{vae: {lever: run}}`` of the CODA levers (validation only)."""
    return {v: {name: f"coda-{v}-lever-{name}" for name in hw.get("coda_levers", {})} for v in hw.get("lever_vaes", [])}


# -- model recipes ---------------------------------------------------------------------------------------


def bits_per_pixel(hw: dict, tokens: int, codebook: int) -> float:
    return tokens * math.log2(codebook) / hw["tile_size"] ** 2


def coda_quantizer(hw: dict, scales: list[int], codebook_size: int) -> dict:
    return {"name": "multiscale", "scales": scales, "quantizer": "attention",
            "quantizer_kwargs": {"codebook_size": codebook_size, **hw["attention"]}}  # fmt: skip


def vq_quantizer(scales: list[int] | None, codebook_size: int, vq: dict) -> dict:
    """VectorQuantizer kwargs ``vq`` (restarts, beta, EMA): one level, or VAR-style multi-scale."""
    inner = {"codebook_size": codebook_size, **vq}
    return {"name": "vq", **inner} if scales is None else {"name": "multiscale", "scales": scales, "quantizer": "vq",
                                                           "quantizer_kwargs": inner}  # fmt: skip


def vqgan_hparams(hw: dict, name: str) -> dict:
    """One point of the VQGAN grid: the base with its own overrides (``learning_rate``, ``vq``, ``embed_dim``)."""
    point = hw["vqgan_grid"][name]
    base = hw["vqgan_base"]
    return {"learning_rate": point.get("learning_rate", base["learning_rate"]),
            "vq": {**base["vq"], **point.get("vq", {})}, "embed_dim": point.get("embed_dim", base["embed_dim"])}  # fmt: skip


def read_selection(work: Path, name: str) -> dict:
    path = work / "selection" / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the stage select-{name} first (it reads the validation split)")
    return json.loads(path.read_text())


# -- selection stages ------------------------------------------------------------------------------------


def validation_figures(work: Path, runs: list[str]) -> dict[str, dict]:
    """The validation metrics of ``runs`` (PSNR, SSIM, FD-EffNet, utilization, bits per pixel)."""
    rows = {}
    for run in runs:
        metrics = json.loads((work / "validation" / run / "metrics.json").read_text())
        rows[run] = {k: metrics[k] for k in ("psnr", "ssim", "fd_effnet", "utilization", "bits_per_pixel", "num_images")
                     if k in metrics}  # fmt: skip
    return rows


def rank_by_validation(rows: dict[str, dict]) -> list[str]:
    """Best first: highest validation PSNR, ties broken by the lower FD-EffNet."""
    return sorted(rows, key=lambda r: (-rows[r]["psnr"], rows[r].get("fd_effnet", 0.0)))


def select(work: Path, name: str, candidates: dict[str, str], link: str | None, keep: int | None = None) -> None:
    """Stage ``select-<name>``: rank ``{candidate: run}`` on the validation split, write
    ``selection/<name>.json`` (``chosen``: the best candidate, or with ``keep`` the list of the ``keep`` best)
    and (``link``) point ``runs/<link>`` at the best run (seed 0 of its row)."""
    figures = validation_figures(work, list(candidates.values()))
    by_run = {run: c for c, run in candidates.items()}
    ranked = [by_run[r] for r in rank_by_validation(figures)]
    record = {"rule": "highest PSNR on the validation split (ties: lower FD-EffNet); the eval split is not read",
              "chosen": ranked[0] if keep is None else ranked[:keep], "ranking": ranked,
              "validation": {c: figures[run] for c, run in candidates.items()}, "runs": candidates}  # fmt: skip
    if link is not None:
        target = work / "runs" / link
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(candidates[ranked[0]])  # relative: the workdir can move
    reproduce.write_json_atomic(work / "selection" / f"{name}.json", record)


# -- the plan ---------------------------------------------------------------------------------------------


def build(work: Path, hw: dict, ctx: dict) -> list[Stage]:
    """The ordered stages of the fair comparison (nothing is run). ``ctx``: ``coda_hf`` (the CLI command),
    ``launcher``, ``photos``, ``vae_photos``, ``cache_dir`` (as :func:`reproduce.build_plan` resolved them)."""
    plan = _Plan(work, hw, ctx)
    stages = plan.data_and_vaes()
    for v in vae_names(hw):
        stages += plan.coda_rows(v) + plan.ptq_rows(v)
    stages += plan.vqgan_rows()
    for v in vae_names(hw):
        stages += plan.vae_frontier(v)
    stages += plan.vqgan_frontier()
    levers = [stage for v in lever_runs(hw) for stage in plan.coda_levers(v)]
    if levers:  # the levers' other reference on the validation split
        levers.append(plan.validate(f"vqgan-f2-s{hw['seeds'][0]}"))
    stages += levers + plan.evaluations()
    # results.json, results.md and frontier.png are rewritten by every invocation until no run is missing
    stages.append(Stage("report", report_marker(work, hw), [], action=lambda: _report(work, hw)))
    return stages


def reported_runs(hw: dict) -> list[str]:
    """Every run the report reads: the rows' seeds, the frontier points and the levers."""
    return sorted({*eval_runs(hw), *(r for runs in lever_runs(hw).values() for r in runs.values())})


def report_marker(work: Path, hw: dict) -> Path:
    """The report's done marker, named for the runs it covers: a plan that gains runs (a new lever) reports again."""
    digest = hashlib.sha256(json.dumps(reported_runs(hw)).encode()).hexdigest()[:12]
    return work / f"report-complete-{digest}.json"


def _report(work: Path, hw: dict) -> None:
    import fair_report
    import plot_frontier

    results = fair_report.write_report(work, hw)
    plot_frontier.plot(results, work / "frontier.png")
    missing = [r for rows in (results["rows"], results["frontier"]) for row in rows.values() for r in row["missing"]]
    missing += [r for runs in lever_runs(hw).values() for r in runs.values()
                if not (work / "validation" / r / "metrics.json").is_file()]  # fmt: skip
    if not missing:
        reproduce.write_json_atomic(report_marker(work, hw), {"runs": reported_runs(hw)})


class _Plan:
    """Builds the stage families of :func:`build` (one method each)."""

    def __init__(self, work: Path, hw: dict, ctx: dict):
        self.work, self.hw, self.ctx = work, hw, ctx
        self.tiles = ctx["photos"] / f"tiles{hw['tile_size']}"
        self.arch = {"block_out_channels": hw["widths"], "layers_per_block": hw["layers_per_block"],
                     "norm_num_groups": hw["norm_num_groups"]}  # fmt: skip
        self.producer: dict[str, str] = {}  # run -> the stage that makes WORK/runs/<run> (evaluations wait on it)

    # -- helpers
    def train(self, name: str, extra: dict | None = None, lazy=None, needs: tuple[str, ...] = ()) -> Stage:
        """A ``train_tokenizer.py`` stage on the ladder's photos; ``lazy()`` returns config keys known only
        after a selection (resolved when the stage runs); ``needs``: the stages it waits for besides ``data``
        (the stage-0 VAE it adapts is added from ``extra``)."""
        extra = extra or {}
        stage = reproduce._train_stage(name, self.work, self.hw, self.ctx["launcher"], self.ctx["photos"], extra)
        vae = [f"{Path(extra['pretrained_vae']).name}-stats"] if "pretrained_vae" in extra else []
        stage.needs = ("data", *vae, *needs)
        self.producer[name] = name
        if lazy is not None:
            base = dict(stage.config)
            stage.make_config = lambda: {**base, **lazy()}
        return stage

    def validate(self, run: str) -> Stage:
        out = self.work / "validation" / run
        return Stage(f"val-{run}", out / "metrics.json", self._evaluate(run, out, "validation"),
                     needs=(self.producer.get(run, run),))  # fmt: skip

    def _evaluate(self, run: str, out: Path, split: str) -> list[str]:
        return [*self.ctx["coda_hf"], "evaluate", "--model", str(self.work / "runs" / run), "--data", str(self.tiles),
                "--split", split, "--resolution", str(self.hw["tile_size"]), "--output-dir", str(out), "--no-progress",
                "--overwrite"] + (["--cpu"] if self.hw["cpu"] else [])  # fmt: skip

    def selection(self, name: str, candidates: dict[str, str], link: str | None, keep: int | None = None) -> Stage:
        if link is not None:
            self.producer[link] = f"select-{name}"
        return Stage(f"select-{name}", self.work / "selection" / f"{name}.json", [],
                     action=lambda: select(self.work, name, candidates, link, keep),
                     needs=tuple(f"val-{run}" for run in candidates.values()))  # fmt: skip

    def seeds(self) -> list[int]:
        return [s for s in self.hw["seeds"] if s != self.hw["seeds"][0]]

    # -- families
    def data_and_vaes(self) -> list[Stage]:
        hw, work, ctx = self.hw, self.work, self.ctx
        manifest = ctx["photos"] / "manifest.json"
        if manifest.is_file() and "validation" not in json.loads(manifest.read_text()).get("groups", {"validation": 1}):
            raise ValueError(f"{ctx['photos']} has no validation split, which every choice of this plan needs: prepare it "
                             "with --validation-fraction, or use another --workdir / --photos")  # fmt: skip
        data = reproduce._prepare_photos("data", ctx["photos"], ctx["cache_dir"], hw, hw["sources"])
        data.command += ["--validation-fraction", str(hw["validation_fraction"])]
        stages = [data, reproduce._prepare_photos("data-vae", ctx["vae_photos"], ctx["cache_dir"], hw, hw["vae_sources"])]  # fmt: skip
        data.needs = stages[1].needs = ()
        for v, steps in hw["vae_budgets"].items():
            stage, stats = reproduce._vae_stages(work, hw, ctx["launcher"], ctx["coda_hf"], ctx["vae_photos"], f"vae-{v}", steps)
            stage.needs, stats.needs = ("data-vae",), (stage.name,)
            self.producer[stage.name] = stats.name  # the stats stage writes the latent shift / scale into it
            stages += [stage, stats]
        return stages

    def coda(self, v: str, scales: list[int], codebook: int) -> dict:
        hw = self.hw
        return {"model": "coda", "pretrained_vae": str(self.work / "runs" / f"vae-{v}"), "max_train_steps": hw["steps"],
                "quantizer": coda_quantizer(hw, scales, codebook), "model_kwargs": {"lora": hw["lora"]},
                "quantizer_learning_rate": hw["attention_learning_rate"], "data_init_images": hw["data_init_images"]}  # fmt: skip

    def ptq(self, v: str, bins: int, variant: dict, lora: bool) -> dict:
        hw = self.hw
        return {"model": "coda", "pretrained_vae": str(self.work / "runs" / f"vae-{v}"),
                "max_train_steps": hw["steps"] if lora else 0, "quantizer": {"name": "quantile", "bins": bins, **variant},
                "model_kwargs": {"lora": hw["lora"] if lora else {"rank": 0}}, "data_init_images": hw["data_init_images"]}  # fmt: skip

    def coda_rows(self, v: str) -> list[Stage]:
        """CODA at each LoRA rate (seed 0) -> validation -> the chosen rate, then the other seeds."""
        hw, work = self.hw, self.work
        base = self.coda(v, hw["scales"], hw["codebook_size"])
        runs = {f"{r:g}": f"coda-{v}-lr{r:g}" for r in hw["lora_rates"]}
        stages = [self.train(run, {**base, "learning_rate": r, "seed": hw["seeds"][0]}) for r, run in zip(hw["lora_rates"], runs.values())]
        stages += [self.validate(run) for run in runs.values()]
        stages.append(self.selection(f"coda-{v}", runs, f"coda-{v}-s{hw['seeds'][0]}"))
        rate = lambda: {"learning_rate": float(read_selection(work, f"coda-{v}")["chosen"])}  # noqa: E731
        return stages + [self.train(f"coda-{v}-s{s}", {**base, "seed": s}, rate, (f"select-coda-{v}",)) for s in self.seeds()]

    def ptq_rows(self, v: str) -> list[Stage]:
        """The quantile quantizer's variants (validation) and seeds, then decoder LoRA on it (rate on validation)."""
        hw, work, first = self.hw, self.work, self.hw["seeds"][0]
        runs = {name: f"ptq-{v}-{name}" for name in hw["ptq_variants"]}
        stages = [self.train(run, {**self.ptq(v, hw["ptq_bins"], hw["ptq_variants"][name], False), "seed": first})
                  for name, run in runs.items()]  # fmt: skip
        stages += [self.validate(run) for run in runs.values()]
        stages.append(self.selection(f"ptq-{v}", runs, f"ptq-{v}-s{first}"))

        def chosen(bins: int = hw["ptq_bins"], lora: bool = False) -> dict:
            return self.ptq(v, bins, hw["ptq_variants"][read_selection(work, f"ptq-{v}")["chosen"]], lora)

        after = (f"select-ptq-{v}", f"vae-{v}-stats")  # the chosen variant's config names the VAE only then
        stages += [self.train(f"ptq-{v}-s{s}", {"seed": s}, chosen, after) for s in self.seeds()]
        lora_runs = {f"{r:g}": f"ptqlora-{v}-lr{r:g}" for r in hw["ptq_lora_rates"]}
        stages += [self.train(run, {"learning_rate": r, "seed": first}, lambda: chosen(lora=True), after)
                   for r, run in zip(hw["ptq_lora_rates"], lora_runs.values())]  # fmt: skip
        stages += [self.validate(run) for run in lora_runs.values()]
        stages.append(self.selection(f"ptqlora-{v}", lora_runs, f"ptqlora-{v}-s{first}"))
        rate = lambda: {**chosen(lora=True), "learning_rate": float(read_selection(work, f"ptqlora-{v}")["chosen"])}  # noqa: E731
        return stages + [self.train(f"ptqlora-{v}-s{s}", {"seed": s}, rate, (*after, f"select-ptqlora-{v}"))
                         for s in self.seeds()]  # fmt: skip

    def vqgan(self, hparams: dict, quantizer: dict, steps: int, arch: dict | None = None) -> dict:
        return {"model": "vqgan", "max_train_steps": steps, "learning_rate": hparams["learning_rate"], "quantizer": quantizer,
                "model_kwargs": {**(arch or self.arch), "latent_channels": self.hw["latent_channels"],
                                 "embed_dim": hparams["embed_dim"]}}  # fmt: skip

    def vqgan_rows(self) -> list[Stage]:
        """Multi-scale VQGAN: a screen of the grid at ``vqgan_screen_steps`` (validation), the finalists at 6N
        (validation), the winner's other seeds; the single-scale f2 VQGAN with the winner's hyperparameters."""
        hw, work, first = self.hw, self.work, self.hw["seeds"][0]
        full = hw["vqgan_factor"] * hw["steps"]

        def ms(name: str, steps: int) -> dict:
            hp = vqgan_hparams(hw, name)
            return self.vqgan(hp, vq_quantizer(hw["scales"], hw["codebook_size"], hp["vq"]), steps)

        screen = {name: f"msvqgan-screen-{name}" for name in hw["vqgan_grid"]}
        stages = [self.train(run, {**ms(name, hw["vqgan_screen_steps"]), "seed": first}) for name, run in screen.items()]
        stages += [self.validate(run) for run in screen.values()]
        stages.append(self.selection("msvqgan-screen", screen, None, keep=hw["vqgan_finalists"]))
        finals = {f"final{i + 1}": f"msvqgan-final{i + 1}" for i in range(hw["vqgan_finalists"])}
        finalist = lambda i: read_selection(work, "msvqgan-screen")["chosen"][i]  # noqa: E731
        stages += [self.train(run, {"seed": first}, lambda i=i: ms(finalist(i), full), ("select-msvqgan-screen",))
                   for i, run in enumerate(finals.values())]  # fmt: skip
        stages += [self.validate(run) for run in finals.values()]
        stages.append(self.selection("msvqgan", finals, f"msvqgan-s{first}"))
        after = ("select-msvqgan",)
        stages += [self.train(f"msvqgan-s{s}", {"seed": s}, lambda: ms(self.vqgan_winner(), full), after) for s in self.seeds()]
        return stages + [self.train(f"vqgan-f2-s{s}", {"seed": s}, lambda: self.single_scale(full), after) for s in hw["seeds"]]

    def vqgan_winner(self) -> str:
        """The grid point of the winning finalist."""
        final = read_selection(self.work, "msvqgan")["chosen"]  # "final<i>"
        return read_selection(self.work, "msvqgan-screen")["chosen"][int(final[len("final"):]) - 1]

    def single_scale(self, steps: int) -> dict:
        hw, hp = self.hw, vqgan_hparams(self.hw, self.vqgan_winner())
        ss = hw["single_scale"]
        return self.vqgan(hp, vq_quantizer(None, ss["codebook_size"], hp["vq"]), steps, {**self.arch, "block_out_channels": ss["widths"]})

    def vae_frontier(self, v: str) -> list[Stage]:
        """CODA at other layouts (the chosen LoRA rate), the quantile quantizer at other bin counts (the chosen variant)."""
        hw, work, first = self.hw, self.work, self.hw["seeds"][0]
        rate = lambda: {"learning_rate": float(read_selection(work, f"coda-{v}")["chosen"])}  # noqa: E731
        stages = [self.train(f"coda-{v}-{name}", {**self.coda(v, layout["scales"], layout["codebook_size"]), "seed": first}, rate,
                             (f"select-coda-{v}",)) for name, layout in hw["coda_frontier"].items()]  # fmt: skip
        variant = lambda bins: self.ptq(v, bins, hw["ptq_variants"][read_selection(work, f"ptq-{v}")["chosen"]], False)  # noqa: E731
        after = (f"select-ptq-{v}", f"vae-{v}-stats")
        return stages + [self.train(f"ptq-{v}-b{b}", {"seed": first}, lambda b=b: variant(b), after) for b in hw["ptq_frontier_bins"]]

    def vqgan_frontier(self) -> list[Stage]:
        hw, full = self.hw, self.hw["vqgan_factor"] * self.hw["steps"]

        def at(layout: dict) -> dict:
            hp = vqgan_hparams(hw, self.vqgan_winner())
            return self.vqgan(hp, vq_quantizer(layout["scales"], layout["codebook_size"], hp["vq"]), full)

        return [self.train(f"msvqgan-{name}", {"seed": hw["seeds"][0]}, lambda layout=layout: at(layout), ("select-msvqgan",))
                for name, layout in hw["vqgan_frontier"].items()]  # fmt: skip

    def coda_levers(self, v: str) -> list[Stage]:
        """The chosen CODA row (seed 0, the chosen LoRA rate unless the lever sets one) with each lever's change,
        and the validation figures of every lever and of the continuous VAE it adapts."""
        hw, work, first = self.hw, self.work, self.hw["seeds"][0]
        base = {**self.coda(v, hw["scales"], hw["codebook_size"]), "seed": first}
        rate = lambda: {"learning_rate": float(read_selection(work, f"coda-{v}")["chosen"])}  # noqa: E731
        stages = []
        for name, run in lever_runs(hw)[v].items():
            change = hw["coda_levers"][name]
            lazy = None if "learning_rate" in change else rate
            stages.append(self.train(run, {**base, **change}, lazy, (f"select-coda-{v}",)))
        return stages + [self.validate(run) for run in [*lever_runs(hw)[v].values(), f"vae-{v}"]]

    def evaluations(self) -> list[Stage]:
        """The eval split, once per reported run, after every choice was made."""
        return [Stage(f"eval-{run}", self.work / "eval" / run / "metrics.json", self._evaluate(run, self.work / "eval" / run, "eval"),
                      needs=(self.producer[run],)) for run in eval_runs(self.hw)]  # fmt: skip


__all__ = ["build", "eval_runs", "frontier_rows", "lever_runs", "main_rows", "report_marker", "reported_runs", "select", "validation_figures"]
