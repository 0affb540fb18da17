"""summary.json: what a run did, as data, in every run folder of the invocation (and the same
document for `--json`)."""

from __future__ import annotations

import json
import platform
import time
from importlib import metadata
from pathlib import Path

from mmad.atomic import atomic_write_text
from mmad.errors import StorageError, describe_os_error
from mmad.redaction import public_command


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("mmad", "openai", "anthropic", "httpx2", "numpy", "pillow"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def summary_document(summary, meter, variant_runs, *, command: list[str]) -> dict:
    """The machine-readable summary: the same numbers the table shows, per run and in total."""
    price = meter is not None and meter.price is not None
    return {
        "command": public_command(command),
        "versions": versions(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "runs": [{"run": run.run_name, "folder": str(run.out_dir), "settings": run.run_info["settings"]}
                 for run in variant_runs],
        "jobs": {"total": summary.total, "done_before": summary.already_done, "remaining": summary.remaining,
                 "failed": summary.failed},
        "statuses": dict(summary.final_statuses),
        "this_run": {"statuses": dict(summary.statuses), "sources": dict(summary.sources),
                     "http_calls": summary.live_requests, "failed_attempts": dict(summary.failures)},
        "failure_causes": dict(summary.causes.most_common()),
        "tokens": dict(summary.usage),
        "spend_usd": round(summary.spent, 6) if price else None,
        "estimated_usd": round(summary.estimated, 6) if price else None,
        "elapsed_s": round(summary.elapsed_s, 3),
        "stopped": summary.stopped,
        "fatal": str(summary.fatal) if summary.fatal else None,
        "storage_error": summary.storage_error,
        "results": [str(p) for p in summary.csv_paths],
    }


def write_summary(document: dict, folders: list[Path]) -> None:
    """`<out>/summary.json` in every run folder of this invocation (best effort on a full disk)."""
    text = json.dumps(document, indent=1, default=str)
    for folder in folders:
        try:
            atomic_write_text(folder / "summary.json", text)
        except OSError as exc:
            if document.get("storage_error") is None:
                raise StorageError(f"cannot write {describe_os_error(folder / 'summary.json', exc)}") from None


def store_summary(summary, document: dict, folders: list[Path]) -> None:
    """write_summary, where a failure becomes the run's storage error (its exit code) instead of
    hiding what the run did."""
    try:
        write_summary(document, folders)
    except StorageError as error:
        summary.storage_error = summary.storage_error or str(error)
