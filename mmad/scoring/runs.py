"""From options to runs: every variant of the grid with its folder, its jobs and its run.json, and
the check that a folder only ever holds one run's settings.

`score`, `estimate`, `qa run` and `classify` all go through `VariantRun` and `check_run_folder`,
so a run folder means the same thing whichever command wrote it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from mmad import config
from mmad.atomic import atomic_write_text
from mmad.data import datasets
from mmad.data.filememo import FileMemo
from mmad.engine.jobs import build_plans
from mmad.engine.records import best_records
from mmad.errors import ConfigError, StorageError, describe_os_error
from mmad.prompts.templates import load_prompt
from mmad.providers.base import Provider
from mmad.providers.factory import DEFAULT_MODELS
from mmad.results.files import JsonlLog
from mmad.results.runinfo import RUN_FILE, make_run_info, read_run_info, setting_differences
from mmad.scoring.options import ScoreOptions
from mmad.scoring.variants import Variant, expand, read_experiment


@dataclass
class VariantRun:
    """One variant of the grid, ready to run: its name, folder, jobs and run.json."""

    variant: object  # has `.model`; a scoring Variant, or the QA/classify equivalent
    run_name: str
    out_dir: Path
    plans: list
    run_info: dict


def build_variants(opts: ScoreOptions, provider_name: str) -> list[Variant]:
    """The variants the options ask for (a cross product of grid values, or an experiment file)."""
    grid = opts.grid()
    base = Variant(model=DEFAULT_MODELS.get(provider_name, ""), max_tokens=opts.max_tokens,
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
    # the prompt file's own `refs` is the default
    return [replace(v, refs=load_prompt(v.prompt, prompts_dir).refs)
            if v.prompt and load_prompt(v.prompt, prompts_dir).refs is not None else v for v in variants]


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


def folder_conflict(run: VariantRun) -> str | None:
    """Why this run may not write into its folder (another run's settings or results), or None."""
    existing = read_run_info(run.out_dir)
    if existing is not None:
        changed = setting_differences(existing, run.run_info)
        if changed:
            return (f"{run.out_dir} holds the run {existing.get('run')!r} made with other settings "
                    f"({'; '.join(changed)}); use another --out or --run-name, or remove that folder")
        return None
    keys = {job.key for plan in run.plans for job in plan.jobs}
    recorded = {key for plan in run.plans for key in best_records(JsonlLog.read(plan.jsonl_path))}
    if recorded and not recorded & keys:
        return (f"{run.out_dir} holds {len(recorded)} results made with other settings (none matches "
                f"this run's requests); use another --out or --run-name, or remove that folder")
    return None


def check_run_folder(run: VariantRun) -> None:
    """Refuse to mix runs made with other settings into this folder; then (re)write run.json."""
    conflict = folder_conflict(run)
    if conflict:
        raise ConfigError(conflict)
    existing = read_run_info(run.out_dir)
    if existing is None or existing.get("settings") != run.run_info["settings"]:
        try:
            atomic_write_text(run.out_dir / RUN_FILE, json.dumps(run.run_info, indent=1))
        except OSError as exc:
            raise StorageError(f"cannot write {describe_os_error(run.out_dir / RUN_FILE, exc)}") from None
