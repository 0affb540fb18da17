"""`mmad qa ...` (synth, check, fetch, run, estimate, compare) and `mmad eval --task qa`."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmad import config
from mmad.cli.options import (
    HelpFormatter,
    add_engine_options,
    bootstrap_count,
    detail,
    nonneg_int,
    positive_float,
    positive_int,
    temperature,
)
from mmad.cli.output import console, err_console
from mmad.errors import ConfigError
from mmad.qa.data import ROOT_ENV


def shots_count(text: str) -> int:
    value = nonneg_int(text)
    if value > 8:
        raise argparse.ArgumentTypeError(f"at most 8 templates, not {value}")
    return value


def _root_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", help=f"MMAD-QA root holding mmad.json and the images (default ${ROOT_ENV} or ./mmad-qa)")


def _job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--provider", required=True, choices=("openai", "anthropic"), help="the MLLM API")
    p.add_argument("--model", help="model name (default: gpt-4o / claude-3-5-sonnet-latest)")
    p.add_argument("--base-url", help="OpenAI-compatible server (vLLM, Ollama, LM Studio) or API proxy")
    _root_option(p)
    p.add_argument("--dataset", action="append", help="only this dataset (first path component); repeatable")
    p.add_argument("--sample", type=positive_int, help="only N images per dataset (seeded draw, --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample")
    p.add_argument("--mode", choices=("single", "cumulative"), default="single",
                   help="one question per request, or each image's questions as one conversation whose earlier "
                        "turns carry the model's own replies (the published GPT-4o protocol)")
    p.add_argument("--templates", choices=("random", "similar"), default="random",
                   help="which normal templates: random_templates or similar_templates")
    p.add_argument("--shots", type=shots_count, default=1, help="normal templates per request (k; 0 = zero-shot)")
    p.add_argument("--domain-knowledge", action="store_true", help="prepend the category's domain_knowledge.json text")
    p.add_argument("--prompt", help="QA prompt name in the packaged prompts, or a .toml file (default: mmad)")
    p.add_argument("--detail", type=detail,
                   help="OpenAI image detail low|high|auto (default low, as published; auto = not sent)")
    p.add_argument("--max-tokens", type=positive_int, default=200, help="answer length cap sent with each request")
    p.add_argument("--temperature", type=temperature, default=0.0, help="sampling temperature")
    p.add_argument("--out", help="output folder (default results/<run-name>)")
    p.add_argument("--run-name", help="file-name prefix (default: model + mode + shots + non-default choices)")
    p.add_argument("--cache-dir", help=f"response cache (default ${config.CACHE_DIR_ENV} or ./cache)")
    p.add_argument("--timeout", type=positive_float, default=120.0, help="seconds per request")
    p.add_argument("--prices", help="price file (default $MMAD_PRICES or the packaged prices)")
    p.add_argument("--no-prompt-cache", dest="prompt_cache", action="store_false",
                   help="do not mark prefixes for provider prompt caching")


def register(sub) -> None:
    qa = sub.add_parser("qa", help="MMAD-QA: the multiple-choice industrial inspection benchmark",
                        formatter_class=HelpFormatter)
    qa_sub = qa.add_subparsers(dest="qa_command", required=True)

    synth = qa_sub.add_parser("synth", help="write a generated set in the MMAD-QA format (known answers)",
                              formatter_class=HelpFormatter)
    _root_option(synth)
    synth.add_argument("--normal", type=positive_int, default=4, help="normal test images per category")
    synth.add_argument("--defective", type=positive_int, default=6, help="defective test images per category")
    synth.add_argument("--train", type=positive_int, default=6, help="normal template images per category")
    synth.add_argument("--seed", type=int, default=0, help="seed of the generated images and questions")
    synth.set_defaults(func=cmd_qa_synth)

    check = qa_sub.add_parser("check", help="validate mmad.json and the images a run needs",
                              formatter_class=HelpFormatter)
    _root_option(check)
    check.add_argument("--templates", choices=("random", "similar"), default="random",
                       help="which normal templates must exist: random_templates or similar_templates")
    check.add_argument("--shots", type=shots_count, default=1, help="templates per image that must exist (k)")
    check.add_argument("--domain-knowledge", action="store_true",
                       help="also check domain_knowledge.json covers every category")
    check.set_defaults(func=cmd_qa_check)

    fetch = qa_sub.add_parser("fetch", help="download the benchmark's images from the Hugging Face hub",
                              formatter_class=HelpFormatter)
    _root_option(fetch)
    fetch.add_argument("--source", default="mmad-qa", help="mmad-qa (the hub id in mmad.fetch) or another hub dataset "
                                                           "whose files are the images at their paths")
    fetch.set_defaults(func=cmd_qa_fetch)

    for name, text, estimate_only in (("run", "ask a multimodal model every question", False),
                                      ("estimate", "tokens and USD that `mmad qa run` would spend", True)):
        p = qa_sub.add_parser(name, help=text, formatter_class=HelpFormatter)
        _job_options(p)
        if estimate_only:
            p.add_argument("--json", action="store_true", help="the estimate as JSON")
            p.add_argument("-v", "--verbose", action="store_true", help="a row per dataset")
            p.add_argument("--retry-failed", action="store_true", help="price redoing the failed questions too")
            p.set_defaults(func=cmd_qa_run, estimate_only=True, dry_run=False, max_cost=None)
        else:
            add_engine_options(p)
            p.set_defaults(func=cmd_qa_run, estimate_only=False)

    compare = qa_sub.add_parser("compare", help="paired comparison of two QA runs, question by question",
                                formatter_class=HelpFormatter)
    compare.add_argument("base", help="run folder (or result file) of the baseline run")
    compare.add_argument("other", help="run folder (or result file) of the run compared with it")
    fmt = compare.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true", help="tables as Markdown")
    fmt.add_argument("--csv", action="store_true", help="numbers in [0, 1]")
    fmt.add_argument("--json", action="store_true", help="the comparison as JSON")
    compare.add_argument("--bootstrap", type=bootstrap_count, default=1000, metavar="N",
                         help="paired image resamples for the intervals (0 = off)")
    compare.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    compare.set_defaults(func=cmd_qa_compare)


def _format(args: argparse.Namespace) -> str:
    return "json" if args.json else "markdown" if args.markdown else "csv" if args.csv else "terminal"


def cmd_qa_synth(args: argparse.Namespace) -> int:
    from mmad.qa.data import load_benchmark, qa_root
    from mmad.qa.synth import synthesize_qa
    root = qa_root(args.root)
    path = synthesize_qa(root, normal=args.normal, defective=args.defective, train=args.train, seed=args.seed)
    bench = load_benchmark(root, knowledge=True)
    console.print(f"wrote a generated MMAD-QA set: {len(bench.entries)} images, {bench.questions} questions in "
                  f"{len(bench.datasets)} datasets ({', '.join(bench.datasets)}); {path} and domain_knowledge.json")
    return 0


def cmd_qa_check(args: argparse.Namespace) -> int:
    from collections import Counter

    from rich.table import Table

    from mmad.qa.data import load_benchmark, qa_root
    from mmad.qa.metrics import column_of, columns_of, is_normal
    bench = load_benchmark(qa_root(args.root), templates=args.templates, shots=args.shots,
                           knowledge=args.domain_knowledge)
    questions = [q for entry in bench.entries for q in entry.questions]
    columns = columns_of(type("Q", (), {"subtask": q.subtask})() for q in questions)
    table = Table(title=f"MMAD-QA at {bench.root}: {len(bench.entries)} images, {len(questions)} questions")
    for column in ("dataset", "images", "normal", *columns):
        table.add_column(column.replace(" ", "\n", 1), justify="left" if column == "dataset" else "right")
    for name in bench.datasets:
        entries = [e for e in bench.entries if e.dataset == name]
        counts = Counter(column_of(q.subtask) for e in entries for q in e.questions)
        table.add_row(name, str(len(entries)), str(sum(is_normal(e.image) for e in entries)),
                      *(str(counts.get(c, 0)) for c in columns))
    console.print(table)
    console.print(f"ok: every question has options and a valid answer; every query image and its first "
                  f"{args.shots} {args.templates} template(s) exist")
    return 0


def cmd_qa_fetch(args: argparse.Namespace) -> int:
    from mmad.data.fetch import MMAD_QA_HUB, mmad_qa_records, write_records
    from mmad.qa.data import ANNOTATION_FILE, qa_root
    root = qa_root(args.root)
    source = MMAD_QA_HUB if args.source == "mmad-qa" else args.source
    written, skipped = write_records(mmad_qa_records(source), root)
    console.print(f"{written} images written, {skipped} already present, under {root}")
    if not (root / ANNOTATION_FILE).exists():
        console.print(f"note: the annotation file {ANNOTATION_FILE} is published apart from the images: download "
                      f"it from the MMAD repository into {root}")
    return 0


def _run_name(args: argparse.Namespace, model: str, detail_value: str | None) -> str:
    from mmad.engine.jobs import safe_name
    if args.run_name:
        return safe_name(args.run_name)
    parts = [safe_name(model), "qa", args.mode, f"{args.shots}shot"]
    if args.templates == "similar":
        parts.append("similar")
    if args.domain_knowledge:
        parts.append("dk")
    if args.prompt:
        parts.append(safe_name(Path(args.prompt).stem))
    if args.provider == "openai" and detail_value != "low":
        parts.append(f"detail-{detail_value or 'auto'}")
    if args.temperature:
        parts.append(f"t{args.temperature:g}")
    if args.max_tokens != 200:
        parts.append(f"mt{args.max_tokens}")
    return "-".join(parts)


def cmd_qa_run(args: argparse.Namespace) -> int:
    import asyncio

    from mmad.cache.store import ResponseCache
    from mmad.cli.qa_run import QAVariant, dry_run_qa, estimate_qa, run_qa
    from mmad.data.filememo import FileMemo
    from mmad.providers.factory import DEFAULT_MODELS, make_provider
    from mmad.qa.data import load_benchmark, qa_root
    from mmad.qa.jobs import QAOptions, box_token, build_qa_plans, pending_plans
    from mmad.qa.prompt import load_qa_prompt
    from mmad.results.runinfo import make_run_info
    from mmad.scoring.runs import VariantRun

    if args.detail is not None and args.provider != "openai":
        raise ConfigError("--detail is an OpenAI option (Anthropic has no image detail setting)")
    detail_value = None if args.provider != "openai" else (args.detail or "low")
    detail_value = None if detail_value == "auto" else detail_value
    estimate_only = args.estimate_only
    bench = load_benchmark(qa_root(args.root), templates=args.templates, shots=args.shots,
                           knowledge=args.domain_knowledge, datasets=args.dataset, sample=args.sample, seed=args.seed)
    prompt = load_qa_prompt(args.prompt)
    provider = make_provider(args.provider, base_url=args.base_url, timeout=args.timeout,
                             dry_run=args.dry_run or estimate_only, prompt_caching=args.prompt_cache)
    model = args.model or DEFAULT_MODELS[args.provider]
    opts = QAOptions(provider.identity(), model, args.mode, args.templates, args.shots, args.domain_knowledge,
                     detail_value, args.max_tokens, args.temperature)
    run_name = _run_name(args, model, detail_value)
    out_dir = Path(args.out or Path("results") / run_name)
    cache_dir = config.cache_dir(args.cache_dir)
    memo = FileMemo(cache_dir)

    def rebuild(retry_failed: bool = False):
        return build_qa_plans(bench, opts, prompt, out_dir=out_dir, run_name=run_name, memo=memo,
                              retry_failed=retry_failed)
    plans = rebuild(args.retry_failed)
    settings = {"task": "qa", "provider": provider.name, "base_url": provider.base_url, "model": model,
                "mode": args.mode, "templates": args.templates, "shots": args.shots,
                "domain_knowledge": args.domain_knowledge, "prompt": prompt.name, "detail": detail_value,
                "max_tokens": args.max_tokens, "temperature": args.temperature, "image": box_token(None)}
    run = VariantRun(QAVariant(model), run_name, out_dir, plans, make_run_info(run_name, "mllm", settings))
    cache = ResponseCache(cache_dir)
    try:
        if estimate_only or args.dry_run:
            pending = pending_plans(plans, retry_failed=args.retry_failed)
            if estimate_only:
                return estimate_qa(args, provider, cache, run, pending)
            return dry_run_qa(provider, cache, run, pending)
        return asyncio.run(run_qa(args, provider, cache, run, rebuild))
    finally:
        cache.close()


def cmd_qa_compare(args: argparse.Namespace) -> int:
    from mmad.cli.qa_tables import print_comparison
    from mmad.qa.compare import compare_qa_runs
    result = compare_qa_runs(Path(args.base), Path(args.other), bootstrap=args.bootstrap, seed=args.seed)
    print_comparison(result, fmt=_format(args))
    return 0


def eval_qa(args: argparse.Namespace) -> int:
    """`mmad eval --task qa PATHS`: the published table for each run found."""
    from mmad.cli.qa_tables import print_failure_notes, print_scores
    from mmad.qa.metrics import evaluate_runs
    from mmad.qa.results import load_runs
    if getattr(args, "agreement", False):
        raise ConfigError("--agreement ranks MAD-Bench score runs; it does not apply to --task qa")
    skipped: list[Path] = []
    runs = load_runs([Path(p) for p in args.paths], skipped)
    if skipped:
        err_console.print(f"note: left out {len(skipped)} folder(s) of other result files (score or classify runs: "
                          f"`mmad eval` without --task qa, or --task classify): {', '.join(map(str, skipped[:3]))}"
                          f"{' ...' if len(skipped) > 3 else ''}", markup=False, highlight=False)
    columns, results = evaluate_runs(runs, bootstrap=args.bootstrap, seed=args.seed)
    print_scores(columns, results, fmt=_format(args), bootstrap=args.bootstrap)
    print_failure_notes(results)
    return 0
