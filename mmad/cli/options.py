"""Command-line options shared by score, estimate and baseline, validated where they are parsed.

Every number is checked by argparse itself (one line, exit 2) and `--help` shows every default.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from mmad import config
from mmad.data import datasets
from mmad.scoring.value_checks import (  # noqa: F401  (re-exported for the front ends)
    MAX_RESAMPLES,
    SETTINGS,
    bootstrap_count,
    bounded_int,
    corruption,
    detail,
    detector_name,
    finite_float,
    image_size,
    integer,
    listed,
    max_height,
    max_tokens,
    model_arg,
    name,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    ratio,
    reference_choice,
    refs_count,
    run_name,
    temperature,
)


class Parser(argparse.ArgumentParser):
    """Bad arguments are one line (and exit 2), not a page of usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.HelpFormatter):
    """Shows every option's default: the value, or the help text's own words for computed ones."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        switch = isinstance(action.const, bool) and action.nargs == 0  # --flag / --no-flag: the help says it
        if ("default" in text or not action.option_strings or switch or action.default is None
                or action.default is False or action.default == argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)".strip()


def _help_text(text: str) -> str:
    return text.replace("%", "%%")  # argparse formats help with %; a path may hold one


def root_help(what: str = "data root") -> str:
    return _help_text(f"{what} (default {config.describe_default('root', './data')})")


def cache_help() -> str:
    return _help_text(f"response cache (default {config.describe_default('cache_dir', './cache')})")


def configured(setting: str, allowed: tuple[str, ...] | None = None) -> tuple[object, str]:
    """(default, words for --help) of a setting a project may default (environment or project
    file); (None, "") when neither sets it, or it is not among `allowed`."""
    found = config.resolve(setting)
    if found.value is None or (allowed is not None and found.value not in allowed):
        return None, ""
    value = f"{found.value:g}" if isinstance(found.value, float) else found.value
    return found.value, _help_text(f" (default: {value}, from {found.source})")


def add_provider_option(parser: argparse.ArgumentParser, choices: tuple[str, ...], text: str,
                        type_: Callable[[str], str] | None = None) -> None:
    """--provider: required unless the environment or the project file names one of `choices`;
    `type_` replaces the fixed choices (detectors also take anomalib:MODEL)."""
    default, said = configured("provider", choices)
    limits: dict = {"type": type_, "metavar": "PROVIDER"} if type_ else {"choices": choices}
    parser.add_argument("--provider", required=default is None, default=default, help=text + said, **limits)


def add_model_option(parser: argparse.ArgumentParser, builtin: str, **kwargs) -> None:
    """--model, defaulting to $MMAD_MODEL / the project file's model when set."""
    default, said = configured("model")
    if "action" not in kwargs:  # a grid option (score, estimate) takes its default in build_variants
        kwargs["default"] = default
    parser.add_argument("--model", help=(f"model name{kwargs.pop('plural', '')}" + (said or f" (default: {builtin})")),
                        **kwargs)


def add_base_url_option(parser: argparse.ArgumentParser) -> None:
    default, said = configured("base_url")
    parser.add_argument("--base-url", default=default,
                        help="OpenAI-compatible server (vLLM, Ollama, LM Studio) or API proxy" + said)


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset name (see `mmad data list`)")
    parser.add_argument("--subset", help="one subset (default: every subset of the dataset)")
    parser.add_argument("--root", help=root_help())


def add_job_options(sc: argparse.ArgumentParser, providers: tuple[str, ...], *, detectors: bool) -> None:
    """What defines the jobs (shared by score and estimate, so both build the same requests).
    Options marked "grid" take comma-separated or repeated values: every combination is a run."""
    if detectors:
        add_provider_option(sc, providers, "an MLLM API, or a conventional detector fitted on the same few references: "
                            f"{', '.join(providers)}, or anomalib:MODEL (Cflow, Dfm, Draem, EfficientAd, Fastflow, "
                            "Ganomaly, Padim, Patchcore, ReverseDistillation, Stfpm)", type_=detector_name(providers))
    else:
        add_provider_option(sc, providers, "an MLLM API")
    add_data_options(sc)
    add_model_option(sc, "gpt-4o / claude-3-5-sonnet-latest, the paper's", plural="(s), grid", action="append",
                     type=listed(SETTINGS["model"].check))
    sc.add_argument("--prompt", action="append", type=listed(SETTINGS["prompt"].check),
                    help="prompt name(s) in the packaged prompts or .toml file(s), grid (default: the dataset's family)")
    sc.add_argument("--prompts-dir", help=f"prompt folder (default ${config.PROMPTS_DIR_ENV} or the packaged prompts)")
    sc.add_argument("--refs", action="append", type=listed(SETTINGS["refs"].check),
                    help="normal reference images per request, 0-5, grid (default: the prompt file's refs, else 3)")
    sc.add_argument("--reference-choice", action="append", type=listed(SETTINGS["reference_choice"].check),
                    help="first | random:SEED | similar, grid (default: first, as the reference scripts)")
    sc.add_argument("--prompt-family", choices=datasets.PROMPT_FAMILIES, help="for datasets it cannot be inferred for")
    sc.add_argument("--subject", help="object/class name put into the prompt")
    add_base_url_option(sc)
    sc.add_argument("--out", help="output folder (default results/<run-name>; with a grid, the parent folder)")
    sc.add_argument("--run-name", type=run_name,
                    help="file-name prefix (default: the model name + every non-default choice)")
    sc.add_argument("--cache-dir", help=cache_help())
    sc.add_argument("--timeout", type=positive_float, default=120.0, help="seconds for a whole answer (a deadline per attempt, not per read)")
    sc.add_argument("--temperature", action="append", type=listed(SETTINGS["temperature"].check),
                    help="sampling temperature(s), grid (default: 0)")
    sc.add_argument("--max-tokens", type=SETTINGS["max_tokens"].value_type, default=300,
                    help="answer length cap sent with each request")
    sc.add_argument("--max-height", action="append", type=listed(SETTINGS["max_height"].check),
                    help="image preparation, grid: auto (the scripts' rule per family: 512 px for industrial and "
                         "medical, the original bytes for multidog), original, or a height in pixels (default: auto)")
    sc.add_argument("--detail", action="append", type=listed(SETTINGS["detail"].check),
                    help="OpenAI image detail auto|low|high, grid (default: not sent = auto; estimates assume high)")
    sc.add_argument("--corrupt", action="append", type=listed(SETTINGS["corrupt"].check),
                    help="brightness:S or gaussian_noise:S (S = 1..5, ImageNet-C) on the query images, grid")
    sc.add_argument("--corrupt-references", action="store_true", help="corrupt the reference images too")
    sc.add_argument("--repeats", type=bounded_int(1, 1000), default=1,
                    help="independent answers per job at identical settings (noise floor; every repeat is paid)")
    sc.add_argument("--sample", type=SETTINGS["sample"].value_type, help="score a stratified sample of N images per subset")
    sc.add_argument("--seed", type=SETTINGS["sample_seed"].value_type, default=0,
                    help="seed of --sample" + (" and of the detectors" if detectors else ""))
    sc.add_argument("--experiment", help="an experiment file of variants ([[variant]] tables or a [grid])")
    sc.add_argument("--prices", help="price file (default $MMAD_PRICES or the packaged prices)")
    sc.add_argument("--no-prompt-cache", dest="prompt_cache", action="store_false",
                    help="do not mark the fixed prefix for provider prompt caching")
    # --- hybrid (mmad/hybrid.py, mmad/cli_hybrid.py): a detector run gates the MLLM ---
    sc.add_argument("--hybrid", metavar="DETECTOR_RUN", help="a detector run folder: images it calls normal get "
                    "score 0 from the detector (not sent); the rest go to the model")
    sc.add_argument("--gate-threshold", type=finite_float, help="with --hybrid: one detector-score threshold for every "
                    "subset (default: per subset, the largest score of the detector's held-out normal images)")
    sc.add_argument("--hybrid-contour", choices=("none", "separate", "on-query"), default="none",
                    help="with --hybrid: show the model the detected region as a red contour, as an extra image "
                         "or drawn on the query")
    # --- end hybrid ---


def add_engine_options(sc: argparse.ArgumentParser) -> None:
    concurrency, said = configured("concurrency")
    sc.add_argument("--concurrency", type=positive_int, default=concurrency,
                    help="requests in flight" + (said or " (default: enough for the rate limit)"))
    rpm, said = configured("rpm")
    sc.add_argument("--rpm", type=positive_float, default=rpm,
                    help="requests per minute cap (the provider's own limit also applies)" + said)
    sc.add_argument("--tpm", type=positive_float, help="tokens per minute cap (the provider's own limit also applies)")
    sc.add_argument("--max-attempts", type=positive_int, default=6,
                    help="tries per job for server errors and timeouts, the first included (429s do not count)")
    sc.add_argument("--rate-limit-timeout", type=positive_float, default=900.0,
                    help="seconds one job may spend waiting out 429s before it is recorded as failed; no single "
                         "wait is longer (a longer retry-after stops the run, resumable)")
    sc.add_argument("--image-workers", type=positive_int, help="threads preparing images (default: all cores)")
    sc.add_argument("--retry-failed", action="store_true", help="redo jobs recorded as error/refused/parse_failed")
    sc.add_argument("--fresh", action="store_true",
                    help="start the output folder over: its previous run's files move to <out>.replaced-<time> "
                         "(the cache still serves identical requests, so nothing paid is paid again)")
    sc.add_argument("--max-cost", type=nonneg_float, metavar="USD",
                    help="never spend more than this; stops when the next request's worst case does not fit")
    sc.add_argument("--batch", action="store_true",
                    help="use the provider's Batch API (half price, within 24 h); rerun the command to resume polling")
    sc.add_argument("--poll-interval", type=positive_float, default=30.0, help="seconds between batch status checks")
    sc.add_argument("--batch-max-requests", type=positive_int,
                    help="split batches at this many requests (default and cap: the provider's limit, 50,000 for "
                         "OpenAI, 100,000 for Anthropic)")
    sc.add_argument("--batch-max-mb", type=positive_float,
                    help="split batches at this many MiB of requests (default and cap: the provider's limit, kept "
                         "under the API's: 190 MiB for OpenAI (200 MB), 240 MiB for Anthropic (256 MB))")
    sc.add_argument("--dry-run", action="store_true", help="print the jobs per variant and the first request; send nothing")
    sc.add_argument("--progress-every", type=positive_float, default=10.0,
                    help="seconds between progress lines when the output is not a terminal")
    sc.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    sc.add_argument("-q", "--quiet", action="store_true", help="no progress display")


SCORE_PROVIDERS = ("openai", "anthropic", "patchcore", "padim", "rd")


def add_score_options(sc: argparse.ArgumentParser) -> None:
    """Every option of `mmad score` (the detectors read this list to refuse the MLLM-only ones)."""
    add_job_options(sc, providers=SCORE_PROVIDERS, detectors=True)
    add_engine_options(sc)
    add_detector_options(sc, with_seed=False)


def score_actions() -> list[argparse.Action]:
    """The actions of a `mmad score` parser, so a new option is never missed by a check over them."""
    parser = Parser(add_help=False)
    add_score_options(parser)
    return parser._actions


def add_detector_options(parser: argparse.ArgumentParser, *, with_seed: bool = True) -> None:
    group = parser.add_argument_group("conventional detectors (patchcore, padim, rd, anomalib:MODEL)")
    group.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                       help="auto = CUDA when present, else CPU")
    group.add_argument("--image-size", type=image_size, default=224, help="images are resized to this square size")
    group.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass")
    if with_seed:
        group.add_argument("--seed", type=nonneg_int, default=0, help="seed of the detector's random draws")
    group.add_argument("--backbone", choices=("efficientnet_lite0", "resnet18", "resnet50", "wide_resnet50_2"),
                       help="feature extractor (default: efficientnet_lite0, whose weights are bundled; an anomalib "
                            "model that cannot take it uses its own default)")
    group.add_argument("--weights", help="a local state-dict file for the backbone (required for the ResNets; "
                                         "anomalib:EfficientAd: its pretrained teacher); nothing is downloaded")
    group.add_argument("--random-weights", action="store_true",
                       help="run with untrained backbone weights instead of refusing (tests and timings only)")
    group.add_argument("--epochs", type=positive_int,
                       help="training epochs of Reverse Distillation and anomalib's trained models (default: 30)")
    group.add_argument("--coreset-ratio", type=ratio,
                       help="PatchCore memory bank kept, in (0, 1] (default: 1.0 few-shot, 0.1 full-shot; "
                            "anomalib:Patchcore: anomalib's 0.1)")
    group.add_argument("--model-arg", action="append", type=model_arg, metavar="KEY=VALUE",
                       help="an anomalib model's own argument, repeatable (e.g. num_neighbors=1, "
                            "imagenet_dir=DIR for EfficientAd); recorded in run.json")
