"""Failures and spend per run, from the JSONL records beside the result files.

Statuses count the **last** record per image (a `--retry-failed` rerun appends a new record for
the same image, which replaces the old outcome). Tokens and dollars count **every** record that was
paid for (`source` "live" or "batch": each retry that reached the API costs), priced with
`mmad.cost.load_prices().lookup(model)` for run.json's `settings.model`; batch records get the
model's batch multiplier. Records answered from the response cache (`source` "cache") cost
nothing now; what they would have cost is shown as "saved by the cache".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mmad.analysis.runs import Run, sidecar_records

PAID_SOURCES = ("live", "batch")
TOKEN_KEYS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens")


@dataclass(frozen=True)
class RunSpend:
    run: str
    rows: int
    dropped: int  # rows without a score in the result CSVs
    statuses: dict[str, int] = field(default_factory=dict)  # empty when there is no JSONL
    sources: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)  # paid records only
    usd: float | None = None
    saved_usd: float | None = None
    note: str = ""

    def as_json(self) -> dict:
        return asdict(self)


def run_spend(run: Run, prices_path: str | Path | None = None) -> RunSpend:
    rows = sum(len(t.paths) for t in run.tables)
    dropped = sum(int(np.isnan(t.scores).sum()) for t in run.tables)
    records = [r for t in run.tables for r in sidecar_records(t)]
    if not records:
        return RunSpend(run.name, rows, dropped, note="no JSONL records beside the result files")
    last = {(r.get("dataset"), r.get("subset"), r.get("path")): r for r in records}
    statuses = Counter(str(r.get("status")) for r in last.values())
    sources = Counter(str(r.get("source")) for r in last.values())
    paid = [r for r in records if r.get("source") in PAID_SOURCES]
    tokens: Counter[str] = Counter()
    for record in paid:
        for key in TOKEN_KEYS:
            tokens[key] += int((record.get("usage") or {}).get(key, 0) or 0)
    usd, saved, note = _price(run, paid, [r for r in records if r.get("source") == "cache"], prices_path)
    if sources and set(sources) == {"local"}:
        note = "local detector: no API spend"
    return RunSpend(run.name, rows, dropped, dict(statuses), dict(sources), dict(tokens), usd, saved, note)


def _price(run: Run, paid: Sequence[dict], cached: Sequence[dict],
           prices_path: str | Path | None) -> tuple[float | None, float | None, str]:
    if not paid and not cached:
        return None, None, ""
    model = run.settings.get("model")
    if not model:
        return None, None, "no model in run.json: tokens only"
    from mmad.cost.estimate import load_prices  # imported here: only priced runs need it

    table = load_prices(prices_path)
    price = table.lookup(str(model))
    if price is None:
        return None, None, f"model {model!r} is not in {table.path.name}: tokens only"
    usd = sum(price.cost(r.get("usage") or {}, batch=r.get("source") == "batch") for r in paid)
    saved = sum(price.cost(r.get("usage") or {}) for r in cached)
    return usd, saved, f"priced as {price.name} ({table.path.name}, {table.date})"


def spend_table(runs: Sequence[Run], prices_path: str | Path | None = None) -> list[RunSpend]:
    return [run_spend(run, prices_path) for run in runs]
