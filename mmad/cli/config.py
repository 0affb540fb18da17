"""`mmad config`: every project default in effect, its value, and where it came from."""

from __future__ import annotations

import argparse
import json
import os

from mmad import config
from mmad.cli.options import HelpFormatter
from mmad.cli.output import console
from mmad.config import KEYS

UNSET = {"provider": "none: give --provider", "model": "the provider's: gpt-4o / claude-3-5-sonnet-latest",
         "base_url": "none: the provider's API", "concurrency": "none: from the rate limit",
         "rpm": "none: the provider's own limit"}


def register(sub) -> None:
    cf = sub.add_parser("config", help="the project defaults in effect (flag > environment > mmad.toml > built-in)",
                        formatter_class=HelpFormatter)
    cf.add_argument("--json", action="store_true", help="the settings as JSON")
    cf.set_defaults(func=cmd_config)


def settings_rows() -> list[dict]:
    """Each setting: name, value, source, its environment variable."""
    rows = []
    for name, key in KEYS.items():
        found = config.resolve(name)
        rows.append({"setting": name, "value": found.value, "source": found.source, "env": key.env,
                     "what": key.what})
    from mmad.cost.prices import PACKAGED_PRICES, PRICES_ENV
    from mmad.qa.data import ROOT_ENV, qa_root
    for name, env, value, what in (
            ("prompts_dir", config.PROMPTS_DIR_ENV, config.prompts_dir(), "prompt templates"),
            ("prices", PRICES_ENV, os.environ.get(PRICES_ENV) or PACKAGED_PRICES, "price table"),
            ("qa_root", ROOT_ENV, qa_root(), "MMAD-QA root")):
        source = f"environment (${env})" if os.environ.get(env) else "built-in"
        rows.append({"setting": name, "value": str(value), "source": source, "env": env, "what": what})
    return rows


def shown(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def cmd_config(args: argparse.Namespace) -> int:
    found = config.project_file()
    rows = settings_rows()
    if args.json:
        print(json.dumps({"project_file": str(found.path) if found else None, "settings": rows}, indent=2))
        return 0
    from rich.markup import escape
    from rich.table import Table
    where = (f"project file: {found.path} ({found.where})" if found else
             f"no project file in {os.getcwd()} (mmad.toml, or [tool.mmad] in pyproject.toml)")
    table = Table(title="settings (flag > environment > project file > built-in)", caption=escape(where))
    for column in ("setting", "value", "source", "environment variable", "what"):
        table.add_column(column)
    for row in rows:
        value = UNSET.get(row["setting"], "—") if row["value"] is None else shown(row["value"])
        table.add_row(*map(escape, (row["setting"], value, row["source"], f"${row['env']}", row["what"])))
    console.print(table)
    return 0
