"""Class descriptions: per category, a description of the normal object and the anomaly classes.

Each anomaly class has a folder key (the dataset's defect folder: the ground truth), a display
name (what the prompt lists and the model answers) and a description. Data, shipped for the demo
dataset (`mmad/assets/classify/classes/<dataset>.toml`) or supplied with `--classes FILE`:

    # TOML (ours)                                  // JSON: VELM's real *_des.json files
    [cable]                                        {"cable": {"normal": ["The cable ..."],
    normal = "The cable ..."                                  "cut_outer_insulation": ["cut outer sheath",
    classes = [{name = "cut_outer_insulation",                               "A cut ..."],
                display = "cut outer sheath",                 "poke_insulation": [...]}}
                description = "A cut ..."}]        (folder key: [display name, description])

`display` defaults to the folder key. VELM's prompt uses `normal[0]`; mmad's own prompt joins
the list. Keys and display names are matched case-insensitively; `good` is the normal class and
cannot be an anomaly class; a folder key may not contain a comma (MAD-Bench's folders join
several types with commas); two classes of a category may not share a display name (an answer
could not be mapped back).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from mmad.config import asset
from mmad.errors import ConfigError
from mmad.reading import read_bytes

NORMAL = "good"
UNKNOWN = "unknown"
VELM_LAYOUT = '{category: {"normal": [text], folder_key: [display_name, description], ...}}'


@dataclass(frozen=True)
class AnomalyClass:
    key: str  # the defect folder: ground truth, and what results record
    display: str  # what the prompt lists and the model answers
    description: str


@dataclass(frozen=True)
class SubsetClasses:
    normal_texts: tuple[str, ...]
    classes: tuple[AnomalyClass, ...]  # in the file's order

    @property
    def names(self) -> tuple[str, ...]:
        """The folder keys, in the file's order."""
        return tuple(c.key for c in self.classes)

    @property
    def displays(self) -> tuple[str, ...]:
        return tuple(c.display for c in self.classes)

    @property
    def normal(self) -> str:
        """mmad's prompt: every normal text, joined."""
        return " ".join(self.normal_texts)


@dataclass(frozen=True)
class ClassFile:
    source: Path
    sha256: str
    subsets: dict[str, SubsetClasses]  # in the file's order

    def for_subset(self, subset: str) -> SubsetClasses:
        found = self.subsets.get(subset)
        if found is None:
            raise ConfigError(f"{self.source}: no class descriptions for {subset!r} (has: "
                              f"{', '.join(sorted(self.subsets)) or 'none'}); add a [{subset}] table")
        return found

    def order(self) -> dict[str, list[str]]:
        """Every category's folder keys in the file's order (VELM's grouping draw walks them all)."""
        return {name: list(classes.names) for name, classes in self.subsets.items()}

    def display_names(self) -> dict[str, dict[str, str]]:
        return {name: {c.key: c.display for c in classes.classes} for name, classes in self.subsets.items()}


def packaged_class_file(dataset: str) -> Path:
    return asset("classify", "classes", f"{dataset}.toml")


def load_class_file(path: Path) -> ClassFile:
    """Read and validate a class file (TOML, or VELM's JSON)."""
    path = Path(path)
    try:
        raw = read_bytes(path)
    except OSError as exc:
        raise ConfigError(f"class descriptions {path}: cannot read ({exc.strerror or exc})") from None
    try:
        if path.suffix == ".json":
            data = json.loads(raw)
            subsets = {str(name): _from_velm(path, str(name), entry) for name, entry in _mapping(path, data).items()}
        else:
            data = tomllib.loads(raw.decode("utf-8"))
            subsets = {str(name): _from_toml(path, str(name), entry) for name, entry in _mapping(path, data).items()}
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None
    if not subsets:
        raise ConfigError(f"{path}: no categories described")
    return ClassFile(path, hashlib.sha256(raw).hexdigest(), subsets)


def _mapping(path: Path, data) -> dict:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of categories at the top level")
    return data


def _from_toml(path: Path, name: str, entry) -> SubsetClasses:
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: [{name}] must be a table with `normal` and `classes`")
    classes = entry.get("classes")
    if not isinstance(classes, list):
        raise ConfigError(f"{path}: [{name}].classes must be a list of {{name, description}} tables")
    found = []
    for index, item in enumerate(classes, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or \
                not isinstance(item.get("description"), str) or not isinstance(item.get("display", ""), str):
            raise ConfigError(f"{path}: [{name}].classes[{index}] needs a string `name` and `description` "
                              f"(and optionally `display`)")
        found.append(AnomalyClass(item["name"], item.get("display") or item["name"], item["description"]))
    normal = entry.get("normal")
    return _checked(path, name, [normal] if isinstance(normal, str) else normal, found)


def _from_velm(path: Path, name: str, entry) -> SubsetClasses:
    if not isinstance(entry, dict) or "normal" not in entry:
        raise ConfigError(f"{path}: {name!r} must be an object with \"normal\" and the classes (VELM's layout: "
                          f"{VELM_LAYOUT})")
    found = []
    for key, value in entry.items():
        if key == "normal":
            continue
        if not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: {name!r}: {key!r} must be [display_name, description] (VELM's layout: "
                              f"{VELM_LAYOUT})")
        found.append(AnomalyClass(key, value[0], value[1]))
    return _checked(path, name, entry["normal"], found)


def _checked(path: Path, name: str, normal, found: list[AnomalyClass]) -> SubsetClasses:
    if not isinstance(normal, list) or not normal or not all(isinstance(t, str) and t.strip() for t in normal):
        raise ConfigError(f"{path}: {name!r} needs a non-empty normal description")
    if not found:
        raise ConfigError(f"{path}: {name!r} lists no anomaly classes")
    keys: set[str] = set()
    displays: dict[str, str] = {}
    for cls in found:
        key, display = cls.key.strip().lower(), cls.display.strip().lower()
        if not key or "," in key or key in (NORMAL, UNKNOWN) or display in (NORMAL, UNKNOWN, ""):
            raise ConfigError(f"{path}: {name!r}: class {cls.key!r} (shown as {cls.display!r}) is empty, has a comma "
                              f"in its folder name, or is reserved ({NORMAL!r} is the normal class, {UNKNOWN!r} an "
                              f"unmapped answer)")
        if key in keys:
            raise ConfigError(f"{path}: {name!r}: class {cls.key!r} listed twice")
        if display in displays:
            raise ConfigError(f"{path}: {name!r}: classes {displays[display]!r} and {cls.key!r} share the display "
                              f"name {cls.display!r}: an answer could not be mapped back")
        if not cls.description.strip():
            raise ConfigError(f"{path}: {name!r}: class {cls.key!r} has an empty description")
        keys.add(key)
        displays[display] = cls.key
    return SubsetClasses(tuple(normal), tuple(found))
