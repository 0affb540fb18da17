"""Providers: one file per vendor behind `base.Provider`. "OpenAI-compatible" = openai + base_url."""
