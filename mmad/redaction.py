"""What may be written down about a command or a server: never a credential.

A base URL can carry a password (`http://user:pass@host/v1`) or a key in its query string
(`?api-key=...`); run.json, summary.json, cache keys and messages keep only scheme, host, port
and path.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

_SECRET_OPTIONS = ("--api-key", "--key", "--token", "--password")


@lru_cache(maxsize=64)
def public_url(url: str) -> str:
    """A URL without user:password, query string or fragment (and without a trailing slash)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def public_command(argv: Sequence[str]) -> list[str]:
    """A command line as it may be recorded: URLs made public, values of key-like options hidden."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        option, equals, value = arg.partition("=")
        if option in _SECRET_OPTIONS:
            hide_next = not equals
            out.append(f"{option}=***" if equals else arg)
        elif "://" in arg:
            prefix, url = (f"{option}=", value) if equals and "://" in value and "://" not in option else ("", arg)
            out.append(prefix + public_url(url))
        else:
            out.append(arg)
    return out
