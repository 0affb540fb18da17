"""Prompt templates are data: `prompts/<name>.toml` with `system`, `instruction`, `family`, `refs`.

Variables use `$name` (string.Template). Rendering is strict: a variable the template uses but the
caller does not supply is an error before anything is sent; so is an unknown `$` placeholder.
"""

from __future__ import annotations

import string
import tomllib
from dataclasses import dataclass
from pathlib import Path

from mmad.errors import ConfigError

VARIABLES = frozenset({"subject", "dataset", "subset"})


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt: the system line and the instruction text that precedes the images."""

    name: str
    source: Path
    system: str
    instruction: str
    family: str | None  # which dataset family it was written for
    refs: int | None  # how many reference images the text describes (None: any)
    description: str = ""

    def variables(self) -> set[str]:
        found = set()
        for text in (self.system, self.instruction):
            for match in string.Template.pattern.finditer(text):
                name = match.group("named") or match.group("braced")
                if name:
                    found.add(name)
                if match.group("invalid") is not None:
                    raise ConfigError(f"{self.source}: stray '$' in prompt text; write '$$' for a literal dollar")
        return found

    def render(self, **values: str) -> tuple[str, str]:
        """(system, instruction) with every variable filled; missing ones are a ConfigError."""
        missing = self.variables() - {k for k, v in values.items() if v is not None}
        if missing:
            raise ConfigError(f"{self.source}: prompt needs variable(s) {', '.join(sorted(missing))}")
        return (string.Template(self.system).substitute(values),
                string.Template(self.instruction).substitute(values))


def load_prompt(name_or_file: str, prompts_dir: Path) -> PromptTemplate:
    """A prompt by name (`prompts/<name>.toml`) or by file path."""
    path = Path(name_or_file)
    if path.suffix == ".toml":  # a file of your own
        if not path.is_file():
            raise ConfigError(f"prompt file {path} not found")
    else:
        if not prompts_dir.is_dir():
            raise ConfigError(f"prompt folder {prompts_dir} does not exist (--prompts-dir or $MMAD_PROMPTS_DIR)")
        path = prompts_dir / f"{name_or_file}.toml"
        if not path.is_file():
            names = ", ".join(sorted(p.stem for p in prompts_dir.glob("*.toml"))) or "none"
            raise ConfigError(f"unknown prompt {name_or_file!r}: no file {path}; available: {names}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for field in ("system", "instruction"):
        if not isinstance(data.get(field), str) or not data[field].strip():
            raise ConfigError(f"{path}: field {field!r} is missing or empty")
    refs = data.get("refs")
    if refs is not None and (not isinstance(refs, int) or refs < 0):
        raise ConfigError(f"{path}: field 'refs' must be a non-negative integer")
    prompt = PromptTemplate(path.stem, path, data["system"], data["instruction"], data.get("family"),
                            refs, data.get("description", ""))
    unknown = prompt.variables() - VARIABLES
    if unknown:
        raise ConfigError(f"{path}: unknown variable(s) {', '.join(sorted(unknown))}; "
                          f"available: {', '.join(sorted(VARIABLES))}")
    return prompt


def prompt_for(family: str | None, refs: int, choice: str | None, prompts_dir: Path) -> PromptTemplate:
    """The prompt a subset uses: `choice` if given, else its family's (zero-shot when refs == 0)."""
    if choice is None:
        if family is None:
            raise ConfigError("the prompt family cannot be inferred for this dataset; "
                              "pass --prompt-family or --prompt")
        choice = family if refs else f"{family}-zeroshot"
    prompt = load_prompt(choice, prompts_dir)
    if prompt.refs is not None and prompt.refs != refs:
        raise ConfigError(f"prompt {prompt.name!r} describes {prompt.refs} reference image(s) but "
                          f"--refs is {refs}; pick a matching prompt (e.g. {family or 'industrial'}"
                          f"{'-zeroshot' if refs == 0 else ''})")
    return prompt
