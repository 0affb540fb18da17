"""Classification prompts as data (`mmad/assets/classify/<name>-<variant>.toml`), in two layouts.

`velm` (default, `--prompt velm`): VELM's `generate_prompts.py` exactly. ONE paragraph: the
variant's base text with its placeholders replaced in VELM's order — OBJECT by the category
(folder) name, NORMAL_DES by the category's `normal[0]`, NEW_DEFECTS by the display names joined
with ", " — then the `classes` block, whose `$numbered` is "1. <display>: <description>, 2. ..."
(joined with ", "). No system message (`system = ""`); the request is the text, then the
reference(s), the query and the contour image, without labels (`run_llm.py`'s order).

`mmad` (`--prompt mmad`): mmad's reworded prompts — a system line, an instruction with `$subject`,
`$normal`, `$classes` (numbered "k. <display>: <description>" lines), and "Image k:" before each
image. `--prompt FILE` reads a file of either layout.
"""

from __future__ import annotations

import string
import tomllib
from dataclasses import dataclass
from pathlib import Path

from mmad.classify.classes import SubsetClasses
from mmad.config import asset
from mmad.data.images import ImageRef
from mmad.errors import ConfigError
from mmad.reading import read_text

LAYOUTS = {"velm": ("base", "classes"), "mmad": ("system", "instruction")}
DEFAULT_PROMPT = "velm"


@dataclass(frozen=True)
class ClassifyPrompt:
    name: str
    source: Path
    layout: str
    system: str
    text: str  # velm: the base text; mmad: the instruction
    classes_block: str  # velm only
    refs: int

    @property
    def system_message(self) -> str | None:
        return self.system or None

    def render(self, category: str, subject: str, described: SubsetClasses) -> str:
        if self.layout == "velm":
            text = self.text.replace("OBJECT", category)
            text = text.replace("NORMAL_DES", described.normal_texts[0])
            text = text.replace("NEW_DEFECTS", ", ".join(described.displays))
            numbered = ", ".join(f"{k}. {c.display}: {c.description}" for k, c in enumerate(described.classes, 1))
            return text + string.Template(self.classes_block).substitute(numbered=numbered)
        lines = "\n".join(f"{k}. {c.display}: {c.description}" for k, c in enumerate(described.classes, start=1))
        try:
            return string.Template(self.text).substitute(subject=subject, normal=described.normal, classes=lines)
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"{self.source}: unknown or malformed variable {exc} (known: $subject, $normal, "
                              f"$classes)") from None

    def parts(self, text: str, refs: list[ImageRef], query: ImageRef, contour: ImageRef | None) -> tuple:
        """velm: the text, the references, the query, the contour image; mmad: "Image k:" before each."""
        images = list(refs) + [query] + ([contour] if contour is not None else [])
        if self.layout == "velm":
            return (text, *images)
        parts: list = [text]
        for k, image in enumerate(images, start=1):
            parts.extend((f"Image {k}:", image))
        return tuple(parts)

    def prefix_parts(self, refs: int) -> int:
        """How many leading parts are the same for every query of a category."""
        return 1 + refs if self.layout == "velm" else 1 + 2 * refs


def load_classify_prompt(variant: str, choice: str | None = None) -> ClassifyPrompt:
    """A packaged prompt (`velm`, `mmad`) for the variant, or a file of either layout."""
    choice = choice or DEFAULT_PROMPT
    source = Path(choice)
    if source.suffix != ".toml":
        source = asset("classify", f"{choice}-{variant}.toml")
        if not source.is_file():
            raise ConfigError(f"unknown classification prompt {choice!r}: packaged ones are velm and mmad "
                              f"(or give a .toml file)")
    try:
        data = tomllib.loads(read_text(source, "utf-8"))
    except OSError as exc:
        raise ConfigError(f"classification prompt {source}: cannot read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    layout = data.get("layout", "mmad")
    if layout not in LAYOUTS:
        raise ConfigError(f"{source}: layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    for key in LAYOUTS[layout]:
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ConfigError(f"{source}: field {key!r} is missing or empty (layout {layout})")
    if layout == "velm":
        if not isinstance(data.get("system", ""), str):
            raise ConfigError(f"{source}: field 'system' must be a string (\"\" for none)")
        used = {m.group("named") or m.group("braced") for m in string.Template.pattern.finditer(data["classes"])
                if m.group("named") or m.group("braced")}
        if used != {"numbered"}:
            raise ConfigError(f"{source}: field 'classes' must use $numbered and no other variable")
    if data.get("variant", variant) != variant:
        raise ConfigError(f"{source} is a {data.get('variant')!r} prompt, not {variant!r}")
    refs = data.get("refs", 1)
    if not isinstance(refs, int) or refs < 0:
        raise ConfigError(f"{source}: `refs` must be a non-negative integer")
    text = data["base"] if layout == "velm" else data["instruction"]
    return ClassifyPrompt(source.stem, source, layout, data.get("system", ""), text, data.get("classes", ""), refs)
