"""Which provider class serves a `--provider` name, and each vendor's default model (the paper's)."""

from __future__ import annotations

import os

from mmad.errors import ConfigError
from mmad.providers.base import Provider

DEFAULT_MODELS = {"openai": "gpt-4o", "anthropic": "claude-3-5-sonnet-latest"}
MLLM_PROVIDERS = tuple(DEFAULT_MODELS)


def make_provider(name: str, *, base_url: str | None, timeout: float, dry_run: bool = False,
                  prompt_caching: bool = True) -> Provider:
    """The provider for `name`; keys come from the environment only (a dry run needs none)."""
    if name == "openai":
        from mmad.providers.openai import KEY_ENV, OpenAIProvider
        key = "dry-run" if dry_run and not os.environ.get(KEY_ENV) else None
        return OpenAIProvider(base_url=base_url, timeout=timeout, api_key=key, prompt_caching=prompt_caching)
    if name == "anthropic":
        from mmad.providers.anthropic import KEY_ENV as ANTHROPIC_KEY_ENV
        from mmad.providers.anthropic import AnthropicProvider
        key = "dry-run" if dry_run and not os.environ.get(ANTHROPIC_KEY_ENV) else None
        return AnthropicProvider(base_url=base_url, timeout=timeout, api_key=key, prompt_caching=prompt_caching)
    raise ConfigError(f"unknown provider {name!r} (known: {', '.join(MLLM_PROVIDERS)})")
