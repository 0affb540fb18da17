"""What the user gives a provider, checked before any request: a base URL the SDKs can post to and
a key that can be sent. Anything else is bad input said in one line naming the flag or variable
(exit 2), never a server to blame (exit 3)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from mmad.errors import ConfigError, shorten


def check_base_url(url: str, source: str = "--base-url") -> str:
    """A base URL the SDKs can post to: http(s), a host, a port in 1-65535. Anything else is bad
    input said in one line (exit 2) before any request, not a server to blame (exit 3)."""
    shown = shorten(re.sub(r"//[^/@]*@", "//***@", url), 120)  # never a password in a message
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # "Port out of range 0-65535", an unclosed [IPv6 bracket
        words = "the port is out of range" if "port" in str(exc).lower() else str(exc).lower()
        raise ConfigError(f"{source} {shown}: {words} (ports are 1-65535)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{source} {shown}: not a URL; expected http(s)://host[:port][/path], e.g. "
                          f"http://127.0.0.1:8000/v1")
    if port == 0:
        raise ConfigError(f"{source} {shown}: port 0 is no server's port (ports are 1-65535)")
    if any(c.isspace() for c in url):
        raise ConfigError(f"{source} {shown}: a URL has no spaces")
    return url


def check_key(key: str | None, env: str) -> str | None:
    """A key from the environment as it will be sent: a blank one, or one with a space or line
    break in it (a copy-paste accident), is bad input named by its variable, never sent."""
    if key is None:
        return None
    if not key.strip():
        raise ConfigError(f"{env} is set but blank; set it to the key (or unset it: a local server needs none)")
    if any(c.isspace() or not c.isprintable() for c in key):
        raise ConfigError(f"{env} holds a space, line break or control character (a copy-paste accident?); "
                          f"set it to the key alone")
    return key
