"""Prompt templates are data: `<name>.toml` (packaged in mmad/assets/prompts, or your own file) with
`system`, `instruction`, `family`, `refs` (the number of references the text is written for, the
default for --refs) and optionally `zeroshot` (the prompt sent instead when --refs is 0).

Variables use `$name` (string.Template). Rendering is strict: a variable the template uses but the
caller does not supply is an error before anything is sent; so is an unknown `$` placeholder.
Besides `$subject`, `$dataset`, `$subset`, a text can adapt to the number of references k:
`$count` (images in all, in words: "four" for k = 3), `$ref_list` ("1, 2, 3"), `$query_number`
("4") and `$ref_lines` (the scripts' novelty lines: "Image 1: Belongs to the normal class X." then
"Image 2: Also belongs ..."). The packaged prompts use them, so they take any k from 1 to 5 and
render byte-identically to the scripts' text for k = 3.
"""

from __future__ import annotations

import string
import tomllib
from dataclasses import dataclass
from pathlib import Path

from mmad.errors import ConfigError
from mmad.paths import describe_target
from mmad.reading import read_text

VARIABLES = frozenset({"subject", "dataset", "subset", "count", "ref_list", "query_number", "ref_lines"})
REFERENCE_VARIABLES = frozenset({"count", "ref_list", "query_number", "ref_lines"})
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def reference_variables(k: int, subject: str | None) -> dict[str, str]:
    """The values of the reference-count variables for k references."""
    lines = [f"Image 1: Belongs to the normal class {subject}."] + [
        f"Image {i}: Also belongs to the normal class {subject}." for i in range(2, k + 1)]
    return {"count": NUMBER_WORDS.get(k + 1, str(k + 1)), "ref_list": ", ".join(str(i) for i in range(1, k + 1)),
            "query_number": str(k + 1), "ref_lines": "\n".join(lines) if k else ""}


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
    zeroshot: str | None = None  # the prompt sent instead with --refs 0

    @property
    def adapts(self) -> bool:
        """The text adapts to any number of references (it uses the reference variables)."""
        return bool(self.variables() & REFERENCE_VARIABLES)

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

    def render(self, *, refs: int | None = None, **values: str) -> tuple[str, str]:
        """(system, instruction) with every variable filled; missing ones are a ConfigError.
        `refs` fills the reference-count variables (default: the prompt's own count)."""
        k = refs if refs is not None else self.refs
        if k is not None:
            values = {**reference_variables(k, values.get("subject")), **values}
        missing = self.variables() - {k for k, v in values.items() if v is not None}
        if missing:
            raise ConfigError(f"{self.source}: prompt needs variable(s) {', '.join(sorted(missing))}")
        return (string.Template(self.system).substitute(values),
                string.Template(self.instruction).substitute(values))


def load_prompt(name_or_file: str, prompts_dir: Path) -> PromptTemplate:
    """A prompt by name (`prompts/<name>.toml`) or by file path."""
    path = Path(name_or_file)
    if path.is_dir():
        raise ConfigError(f"prompt {path} is a folder; name a prompt or a .toml file (--prompts-dir takes folders)")
    if path.suffix == ".toml":  # a file of your own
        if not path.is_file():
            found = describe_target(path)
            raise ConfigError(f"prompt file {path} not found" if found == "missing"
                              else f"prompt file {path} is {found}, not a file")
    else:
        if not prompts_dir.is_dir():
            raise ConfigError(f"prompt folder {prompts_dir} does not exist (--prompts-dir or $MMAD_PROMPTS_DIR)")
        path = prompts_dir / f"{name_or_file}.toml"
        if not path.is_file():
            names = ", ".join(sorted(p.stem for p in prompts_dir.glob("*.toml"))) or "none"
            raise ConfigError(f"unknown prompt {name_or_file!r}: no file {path}; available: {names}")
    try:
        data = tomllib.loads(read_text(path, "utf-8-sig"))  # -sig: a byte-order mark is no text
    except OSError as exc:
        raise ConfigError(f"prompt file {path}: cannot read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for field in ("system", "instruction"):
        if not isinstance(data.get(field), str) or not data[field].strip():
            raise ConfigError(f"{path}: field {field!r} is missing or empty")
    refs = data.get("refs")
    if refs is not None and (not isinstance(refs, int) or refs < 0):
        raise ConfigError(f"{path}: field 'refs' must be a non-negative integer")
    zeroshot = data.get("zeroshot")
    if zeroshot is not None and not isinstance(zeroshot, str):
        raise ConfigError(f"{path}: field 'zeroshot' must name a prompt")
    prompt = PromptTemplate(path.stem, path, data["system"], data["instruction"], data.get("family"),
                            refs, data.get("description", ""), zeroshot)
    unknown = prompt.variables() - VARIABLES
    if unknown:
        raise ConfigError(f"{path}: unknown variable(s) {', '.join(sorted(unknown))}; "
                          f"available: {', '.join(sorted(VARIABLES))}")
    return prompt


def prompt_for(family: str | None, refs: int, choice: str | None, prompts_dir: Path) -> PromptTemplate:
    """The prompt a subset uses: `choice` if given, else its family's; with --refs 0 the prompt's
    zero-shot counterpart; a text that adapts to the number of references takes any k of 1-5."""
    if choice is None:
        if family is None:
            raise ConfigError("the prompt family cannot be inferred for this dataset; "
                              "pass --prompt-family or --prompt")
        choice = family
    prompt = load_prompt(choice, prompts_dir)
    if refs == 0 and prompt.refs not in (None, 0) and prompt.zeroshot:
        prompt = load_prompt(prompt.zeroshot, prompts_dir)
    if prompt.refs is not None and prompt.refs != refs and not (refs > 0 and prompt.adapts):
        raise ConfigError(f"prompt {prompt.name!r} describes {prompt.refs} reference image(s) but "
                          f"--refs is {refs}; pick a matching prompt (e.g. {family or 'industrial'}"
                          f"{'-zeroshot' if refs == 0 else ''})")
    return prompt
