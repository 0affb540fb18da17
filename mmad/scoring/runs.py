"""From options to runs: every variant of the grid with its folder, its jobs and its run.json, and
the check that a folder only ever holds one run's settings.

`score`, `estimate`, `qa run` and `classify` all go through `VariantRun` and `check_run_folder`,
so a run folder means the same thing whichever command wrote it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mmad import config
from mmad.atomic import atomic_write_text
from mmad.data import datasets
from mmad.data.filememo import FileMemo
from mmad.engine.jobs import build_plans
from mmad.engine.records import best_records
from mmad.errors import ConfigError, DataError, os_failure
from mmad.prompts.templates import load_prompt
from mmad.providers.base import Provider
from mmad.providers.factory import DEFAULT_MODELS
from mmad.results.files import JsonlLog
from mmad.results.folders import answered_records, remove_unanswered, set_aside
from mmad.results.runinfo import RUN_FILE, make_run_info, read_run_info, setting_differences
from mmad.scoring.options import ScoreOptions
from mmad.scoring.variants import Variant, expand, read_experiment


@dataclass
class VariantRun:
    """One variant of the grid, ready to run: its name, folder, jobs and run.json."""

    variant: Any  # a scoring Variant, or the QA/classify equivalent (has `.model`)
    run_name: str
    out_dir: Path
    plans: list
    run_info: dict


def build_variants(opts: ScoreOptions, provider_name: str) -> list[Variant]:
    """The variants the options ask for (a cross product of grid values, or an experiment file)."""
    grid = opts.grid()
    configured = config.setting("model") if provider_name in DEFAULT_MODELS else None  # $MMAD_MODEL, mmad.toml
    base = Variant(model=str(configured or DEFAULT_MODELS.get(provider_name, "")), max_tokens=opts.max_tokens,
                   corrupt_references=opts.corrupt_references, sample=opts.sample, sample_seed=opts.seed)
    if "detail" in grid and provider_name != "openai":
        raise ConfigError("--detail is an OpenAI option (Anthropic has no image detail setting)")
    prompts_dir = config.prompts_dir(opts.prompts_dir)
    if opts.experiment:  # the file's variants over every combination the flags give
        experiment = read_experiment(Path(opts.experiment))  # read and checked once
        variants = []
        for flags in expand(base, grid):
            for variant in experiment.over(flags):
                overridden = [name for name in grid if getattr(variant, name) != getattr(flags, name)]
                if overridden:  # the file would silently win over a flag the user typed
                    flag = "--" + overridden[0].replace("_", "-")
                    raise ConfigError(f"{opts.experiment}: sets {overridden[0]} that {flag} also sets; "
                                      f"set it in one place (the file's variants apply over the flags)")
                variants.append(variant)
        for prompt in dict.fromkeys(v.prompt for v in variants if v.prompt and v.prompt not in grid.get("prompt", ())):
            try:  # a prompt the file names: the error says where it came from
                load_prompt(prompt, prompts_dir)
            except ConfigError as exc:
                raise ConfigError(f"{opts.experiment}: prompt: {exc}") from None
        return [replace(v, repeat=r) for v in variants for r in range(opts.repeats)]
    variants = expand(base, grid, opts.repeats)
    if "refs" in grid:
        return variants
    return [_prompt_refs(v, prompts_dir) for v in variants]


def _prompt_refs(variant: Variant, prompts_dir: Path) -> Variant:
    """The prompt file's own `refs` is the default number of references."""
    refs = load_prompt(variant.prompt, prompts_dir).refs if variant.prompt else None
    return variant if refs is None else replace(variant, refs=refs)


def prepare_runs(opts: ScoreOptions, provider: Provider, memo: FileMemo) -> list[VariantRun]:
    """Every variant as a run: subsets resolved, plans built (images hashed, cache keys made)."""
    root = config.data_root(opts.root)
    subsets = datasets.resolve(root, opts.dataset, opts.subset, prompt_family=opts.prompt_family,
                               subject=opts.subject)
    variants = build_variants(opts, provider.name)
    families = {subset.prompt_family for subset in subsets}
    if len(families) == 1:  # naming the family's own default prompt is the default, not a variant
        variants = [replace(v, prompt=None) if v.prompt in families else v for v in variants]
    prompts_dir = config.prompts_dir(opts.prompts_dir)
    runs = []
    for variant in variants:
        run_name = variant.run_name(opts.run_name)
        out_dir = Path(opts.out) if len(variants) == 1 and opts.out else Path(opts.out or "results") / run_name
        plans = build_plans(subsets, variant.plan_options(provider.identity(), prompts_dir), out_dir=out_dir,
                            run_name=run_name, memo=memo)
        info = make_run_info(run_name, "mllm", variant.settings(provider.name, provider.base_url))
        runs.append(VariantRun(variant, run_name, out_dir, plans, info))
    return runs


def refuse_shared_folders(runs: list[VariantRun], experiment: str | None) -> None:
    """Two variants never write into one folder (a repeated variant, or --run-name over a grid)."""
    seen: dict[Path, VariantRun] = {}
    for run in runs:
        other = seen.setdefault(run.out_dir, run)
        if other is run:
            continue
        if other.variant == run.variant:
            where = f"{experiment}: " if experiment else ""
            raise ConfigError(f"{where}the variant {run.run_name!r} is listed twice (a [[variant]] repeating "
                              f"another, or one the flags' grid already gives); list each once")
        raise ConfigError(f"the variants {other.run_name!r} and {run.run_name!r} would share the output folder "
                          f"{run.out_dir}; drop --run-name (each variant then gets its own folder)")


@dataclass(frozen=True)
class FolderConflict:
    """Why a run may not simply write into its folder: `reason` in words; `takeover`: the folder's
    run never received an answer, so the corrected command may take the folder over."""

    reason: str
    takeover: bool
    kept: str = "it holds answers, so it is kept"

    def refusal(self, folder: Path) -> str:
        """The one line that refuses the run, saying which way out applies."""
        return (f"{self.reason}; {self.kept}: --fresh starts this folder over (its files move "
                f"to {folder.name}.replaced-<time>; the cache still serves identical requests, so nothing paid is "
                f"paid again), or use another --out or --run-name")


def folder_conflict(run: VariantRun) -> FolderConflict | None:
    """Why this run may not write into its folder as it is (another run's settings or results, a
    run.json that cannot be read), or None."""
    try:
        existing = read_run_info(run.out_dir)
    except DataError as exc:  # never guessed around: the deliberate way is --fresh
        return FolderConflict(f"{exc}", takeover=False, kept="mmad never guesses around nor overwrites it")
    if existing is not None:
        changed = setting_differences(existing, run.run_info)
        if not changed:
            return None
        return FolderConflict(f"{run.out_dir} holds the run {existing.get('run')!r} made with other settings "
                              f"({'; '.join(changed)})", takeover=not answered_records(run.out_dir))
    keys = {job.key for plan in run.plans for job in plan.jobs}
    recorded = {key for plan in run.plans for key in best_records(JsonlLog.read(plan.jsonl_path))}
    if recorded and not recorded & keys:
        return FolderConflict(f"{run.out_dir} holds {len(recorded)} results made with other settings (none matches "
                              f"this run's requests)", takeover=not answered_records(run.out_dir))
    return None


def check_run_folder(run: VariantRun, *, fresh: bool = False) -> str | None:
    """Refuse to mix runs made with other settings into this folder, unless `fresh` (start it over:
    its files are set aside) or its run never received an answer (taken over); then (re)write
    run.json. Returns what was done to the folder, in one line, or None."""
    note = None
    if fresh:
        aside = set_aside(run.out_dir)
        if aside is not None:
            note = (f"--fresh: {run.out_dir} starts over; its previous files are in {aside} (the cache still "
                    f"serves identical requests)")
    else:
        conflict = folder_conflict(run)
        if conflict is not None and not conflict.takeover:
            raise ConfigError(conflict.refusal(run.out_dir))
        if conflict is not None:
            removed = remove_unanswered(run.out_dir)
            note = (f"note: {conflict.reason}, but that run never received an answer: this run takes the folder "
                    f"over ({removed} file(s) of it removed)")
    existing = read_run_info(run.out_dir)
    if existing is None or existing.get("settings") != run.run_info["settings"]:
        try:
            atomic_write_text(run.out_dir / RUN_FILE, json.dumps(run.run_info, indent=1))
        except OSError as exc:
            raise os_failure("cannot write", run.out_dir / RUN_FILE, exc) from None
    return note
