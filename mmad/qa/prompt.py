"""The MMAD-QA prompt texts are data (`mmad/assets/qa/<name>.toml`); code fixes only their order.

A request's user message is: k template images, the query image, then ONE text made of

    instruction                      (may be empty)
    domain_knowledge($knowledge)     (with --domain-knowledge)
    few_shot($k)                     (k > 0)
    query
    question_list
    joined by `separator`, which also follows the last of them, then the questions of the
    request, each `question($number, $question, $options)` with `option($letter, $text)` per
    option, concatenated as they are (the template carries its own newlines).

`official` (the default) is the published GPT-4o request: no system message (`system = ""`),
separator "" (the script concatenates without separators). `mmad` is mmad's earlier wording.
Variables are `$name` (string.Template) and every field is filled through it (`$$` is a dollar),
checked when the file is loaded: a missing field, or a field using an unknown variable, is one
line naming the file.
"""

from __future__ import annotations

import string
import tomllib
from dataclasses import dataclass
from pathlib import Path

from mmad.errors import ConfigError
from mmad.qa.data import Question
from mmad.reading import read_text

FIELDS = {"system": set(), "instruction": set(), "domain_knowledge": {"knowledge"}, "few_shot": {"k"},
          "query": set(), "question_list": set(), "separator": set(),
          "question": {"number", "question", "options"}, "option": {"letter", "text"}}
MAY_BE_EMPTY = {"system", "instruction", "separator"}
REQUIRED_VARIABLES = {"domain_knowledge": {"knowledge"}, "question": {"question", "options"},
                      "option": {"letter", "text"}}
DEFAULT_PROMPT = "official"


def packaged_prompts() -> Path:
    from mmad.config import asset
    return asset("qa")


def _variables(text: str, source: Path, field: str) -> set[str]:
    found = set()
    for match in string.Template.pattern.finditer(text):
        if match.group("invalid") is not None:
            raise ConfigError(f"{source}: field {field!r} has a stray '$'; write '$$' for a literal dollar")
        name = match.group("named") or match.group("braced")
        if name:
            found.add(name)
    return found


def _fill(template: str, **values) -> str:
    return string.Template(template).substitute(**values)


@dataclass(frozen=True)
class QAPrompt:
    name: str
    source: Path
    system: str
    instruction: str
    domain_knowledge: str
    few_shot: str
    query: str
    question_list: str
    separator: str
    question: str
    option: str
    description: str = ""

    @property
    def system_message(self) -> str | None:
        """The system message to send; None (no system message at all) when the field is empty."""
        return _fill(self.system) or None

    def question_text(self, question: Question) -> str:
        options = "".join(_fill(self.option, letter=letter, text=text) for letter, text in question.options)
        return _fill(self.question, number=question.number, question=question.text, options=options)

    def opening(self, shots: int, knowledge: str = "") -> str:
        """The text before the first question of a request (ends with the separator)."""
        pieces = [_fill(self.instruction)]
        if knowledge:
            pieces.append(_fill(self.domain_knowledge, knowledge=knowledge))
        if shots:
            pieces.append(_fill(self.few_shot, k=shots))
        pieces += [_fill(self.query), _fill(self.question_list)]
        separator = _fill(self.separator)
        return separator.join(piece for piece in pieces if piece) + separator

    def text(self, shots: int, knowledge: str, questions: list[Question]) -> str:
        """The whole text part of a request asking `questions` (in order)."""
        return self.opening(shots, knowledge) + "".join(self.question_text(q) for q in questions)


def load_qa_prompt(name_or_file: str | None = None) -> QAPrompt:
    """A packaged prompt by name, or a .toml file of the same fields."""
    choice = name_or_file or DEFAULT_PROMPT
    path = Path(choice)
    if path.suffix != ".toml" or not path.is_file():
        path = packaged_prompts() / f"{choice}.toml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in packaged_prompts().glob("*.toml")))
        raise ConfigError(f"unknown QA prompt {choice!r}: no file {path}; available: {names}")
    try:
        data = tomllib.loads(read_text(path, "utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for field, allowed in FIELDS.items():
        value = data.get(field)
        if not isinstance(value, str) or (field not in MAY_BE_EMPTY and not value.strip()):
            raise ConfigError(f"{path}: field {field!r} is missing" + ("" if field in MAY_BE_EMPTY else " or empty")
                              + (" (write it as \"\" for none)" if field in MAY_BE_EMPTY else ""))
        used = _variables(value, path, field)
        unknown = used - allowed
        if unknown:
            raise ConfigError(f"{path}: field {field!r} uses unknown variable(s) {', '.join(sorted(unknown))}; "
                              f"available there: {', '.join(sorted(allowed)) or 'none'}")
        missing = REQUIRED_VARIABLES.get(field, set()) - used
        if missing:
            raise ConfigError(f"{path}: field {field!r} must use ${', $'.join(sorted(missing))} (it would be lost)")
    texts: dict[str, str] = {field: data[field] for field in FIELDS}
    return QAPrompt(path.stem, path, description=data.get("description", ""), **texts)
