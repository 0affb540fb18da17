"""Class descriptions: per subset, a description of the normal object and the anomaly classes.

Data, shipped for the demo dataset (`mmad/assets/classify/classes/<dataset>.toml`) or supplied
with `--classes FILE`, in either of two forms:

    # TOML (ours)                                  // JSON (VELM's *_des.json layout)
    [brick]                                        {"brick": {"normal": ["A brick wall ..."],
    normal = "A brick wall ..."                               "cls": [["blotch", "A patch ..."],
    classes = [{name = "blotch", description = "A patch ..."},           ["scratch", "A line ..."]]}}
               {name = "scratch", description = "A line ..."}]

Class names are matched case-insensitively; `good` is the normal class and cannot be an anomaly
class; a name may not contain a comma (MAD-Bench's folders join several types with commas).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from mmad.config import asset
from mmad.errors import ConfigError

NORMAL = "good"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class SubsetClasses:
    normal: str
    classes: tuple[tuple[str, str], ...]  # (name, description), in the file's order

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.classes)


@dataclass(frozen=True)
class ClassFile:
    source: Path
    sha256: str
    subsets: dict[str, SubsetClasses]

    def for_subset(self, subset: str) -> SubsetClasses:
        found = self.subsets.get(subset)
        if found is None:
            raise ConfigError(f"{self.source}: no class descriptions for {subset!r} (has: "
                              f"{', '.join(sorted(self.subsets)) or 'none'}); add a [{subset}] table")
        return found


def packaged_class_file(dataset: str) -> Path:
    return asset("classify", "classes", f"{dataset}.toml")


def load_class_file(path: Path) -> ClassFile:
    """Read and validate a class file (TOML or VELM-style JSON)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
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
        raise ConfigError(f"{path}: no subsets described")
    return ClassFile(path, hashlib.sha256(raw).hexdigest(), subsets)


def _mapping(path: Path, data) -> dict:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of subsets at the top level")
    return data


def _from_toml(path: Path, name: str, entry) -> SubsetClasses:
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: [{name}] must be a table with `normal` and `classes`")
    classes = entry.get("classes")
    if not isinstance(classes, list):
        raise ConfigError(f"{path}: [{name}].classes must be a list of {{name, description}} tables")
    pairs = []
    for index, item in enumerate(classes, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or \
                not isinstance(item.get("description"), str):
            raise ConfigError(f"{path}: [{name}].classes[{index}] needs a string `name` and `description`")
        pairs.append((item["name"], item["description"]))
    return _checked(path, name, entry.get("normal"), pairs)


def _from_velm(path: Path, name: str, entry) -> SubsetClasses:
    if not isinstance(entry, dict) or not isinstance(entry.get("cls"), list):
        raise ConfigError(f"{path}: {name!r} must be an object with \"normal\" and \"cls\" (VELM's layout)")
    normal = entry.get("normal")
    if isinstance(normal, list):
        normal = " ".join(str(part) for part in normal)
    pairs = []
    for index, item in enumerate(entry["cls"], start=1):
        if not isinstance(item, list) or len(item) != 2 or not all(isinstance(v, str) for v in item):
            raise ConfigError(f"{path}: {name!r} cls[{index}] must be [name, description]")
        pairs.append((item[0], item[1]))
    return _checked(path, name, normal, pairs)


def _checked(path: Path, name: str, normal, pairs: list[tuple[str, str]]) -> SubsetClasses:
    if not isinstance(normal, str) or not normal.strip():
        raise ConfigError(f"{path}: {name!r} needs a non-empty normal description")
    if not pairs:
        raise ConfigError(f"{path}: {name!r} lists no anomaly classes")
    seen = set()
    for cls, description in pairs:
        key = cls.strip().lower()
        if not key or "," in key or key in (NORMAL, UNKNOWN):
            raise ConfigError(f"{path}: {name!r}: class name {cls!r} is empty, has a comma, or is reserved "
                              f"({NORMAL!r} is the normal class, {UNKNOWN!r} an unmapped answer)")
        if key in seen:
            raise ConfigError(f"{path}: {name!r}: class {cls!r} listed twice")
        if not description.strip():
            raise ConfigError(f"{path}: {name!r}: class {cls!r} has an empty description")
        seen.add(key)
    return SubsetClasses(normal.strip(), tuple((cls.strip(), description.strip()) for cls, description in pairs))
