"""The MMAD-QA annotation files, read and validated before any work.

`mmad.json` maps a relative image path to its questions and normal templates::

    {"DS-MVTec/bottle/image/broken_large/000.png": {
        "conversation": [{"Question": "...", "Options": {"A": "...", "B": "..."}, "Answer": "A",
                          "type": "Anomaly Detection"}, ...],
        "mask_path": "...", "similar_templates": [paths], "random_templates": [paths]}}

`domain_knowledge.json` maps dataset -> category -> {"good" / "combined" / defect type: text}.
The real file keys DS-MVTec images under `MVTec` (MMAD's scripts look them up with
`dataset.replace("DS-MVTec", "MVTec")`): that key is used when the file has it, else the
dataset's own name. The dataset of an image is the first component of its path, its category
the second (what the reference summary does). Every problem is one line naming the file and the
entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mmad.errors import DataError
from mmad.reading import read_text

ROOT_ENV = "MMAD_QA_ROOT"
DEFAULT_ROOT = Path("mmad-qa")
ANNOTATION_FILE = "mmad.json"
KNOWLEDGE_FILE = "domain_knowledge.json"
LETTERS = ("A", "B", "C", "D", "E")
TEMPLATE_KINDS = {"random": "random_templates", "similar": "similar_templates"}


def qa_root(explicit: str | Path | None = None) -> Path:
    """--root, else $MMAD_QA_ROOT, else ./mmad-qa."""
    from mmad.config import resolve_path
    return resolve_path(explicit, ROOT_ENV, DEFAULT_ROOT)


@dataclass(frozen=True)
class Question:
    """One multiple-choice question about one image."""

    qid: str  # "<image>#<number>"
    image: str
    number: int  # 1-based position in the image's conversation
    text: str
    options: tuple[tuple[str, str], ...]  # (letter, text) in the file's order
    answer: str
    subtask: str  # the file's `type`, as written

    @property
    def option_map(self) -> dict[str, str]:
        return dict(self.options)


@dataclass(frozen=True)
class Entry:
    """One image: its questions and its normal templates."""

    image: str
    questions: tuple[Question, ...]
    random_templates: tuple[str, ...]
    similar_templates: tuple[str, ...]
    mask_path: str | None

    @property
    def dataset(self) -> str:
        return self.image.split("/")[0]

    @property
    def category(self) -> str:
        return self.image.split("/")[1]

    def templates(self, kind: str) -> tuple[str, ...]:
        return self.similar_templates if kind == "similar" else self.random_templates


@dataclass(frozen=True)
class Benchmark:
    root: Path
    annotation: Path
    entries: tuple[Entry, ...]
    knowledge: Mapping | None = None  # domain_knowledge.json, when asked for

    @property
    def datasets(self) -> list[str]:
        """Dataset names in the order they first appear."""
        return list(dict.fromkeys(entry.dataset for entry in self.entries))

    @property
    def questions(self) -> int:
        return sum(len(entry.questions) for entry in self.entries)

    def knowledge_text(self, entry: Entry) -> str:
        """Every entry of the image's category, one per line (values only, in the file's order)."""
        if self.knowledge is None:
            return ""
        block = self.knowledge[knowledge_key(self.knowledge, entry.dataset)]
        return "\n".join(str(text) for text in block[entry.category].values())


def knowledge_key(data: Mapping, dataset: str) -> str:
    """The top-level key of a dataset in domain_knowledge.json (see the module docstring)."""
    official = dataset.replace("DS-MVTec", "MVTec")
    return official if official in data else dataset


def _read_json(path: Path, what: str) -> object:
    if not path.is_file():
        raise DataError(f"{path}: not found ({what})")
    try:
        return json.loads(read_text(path, "utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None


def _relative(path: object) -> str | None:
    """A clean relative POSIX path, or None when it is not one (absolute, '..', empty)."""
    if not isinstance(path, str) or not path.strip():
        return None
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        return None
    return str(pure)


def _question(image: str, number: int, raw: object) -> Question | str:
    """A validated question, or the problem as text."""
    if not isinstance(raw, Mapping):
        return "is not an object"
    text = raw.get("Question")
    if not isinstance(text, str) or not text.strip():
        return "has no 'Question' text"
    options = raw.get("Options")
    if not isinstance(options, Mapping) or not options:
        return "has no 'Options'"
    for letter, value in options.items():
        if letter not in LETTERS:
            return f"option key {letter!r} is not one of the letters A-E"
        if not isinstance(value, str) or not value.strip():
            return f"option {letter} has no text"
    answer = raw.get("Answer")
    if not isinstance(answer, str) or answer not in options:
        return f"answer {answer!r} is not among its options ({', '.join(options)})"
    subtask = raw.get("type")
    if not isinstance(subtask, str) or not subtask.strip():
        return "has no 'type' (subtask)"
    return Question(f"{image}#{number}", image, number, text, tuple((k, v) for k, v in options.items()),
                    answer, subtask)


def _entry(image: str, raw: object) -> Entry | str:
    if not isinstance(raw, Mapping):
        return "is not an object"
    if _relative(image) != image or len(PurePosixPath(image).parts) < 3:
        return "the image path must be relative and start with <dataset>/<category>/"
    conversation = raw.get("conversation")
    if not isinstance(conversation, list) or not conversation:
        return "has no 'conversation' (a non-empty list of questions)"
    questions = []
    for number, item in enumerate(conversation, start=1):
        question = _question(image, number, item)
        if isinstance(question, str):
            return f"question {number} {question}"
        questions.append(question)
    lists: dict[str, tuple[str, ...]] = {}
    for field in TEMPLATE_KINDS.values():
        value = raw.get(field, [])
        paths = [_relative(p) for p in value] if isinstance(value, list) else [None]
        clean = tuple(p for p in paths if p is not None)
        if len(clean) != len(paths):
            return f"'{field}' must be a list of relative image paths"
        lists[field] = clean
    mask = raw.get("mask_path")
    if mask is not None and not isinstance(mask, str):
        return "'mask_path' must be a path or null"
    return Entry(image, tuple(questions), lists["random_templates"], lists["similar_templates"], mask or None)


def parse_annotation(data: object, source: Path) -> tuple[Entry, ...]:
    """Every entry of an mmad.json document, validated; the first problem is one line (with a count)."""
    if not isinstance(data, Mapping) or not data:
        raise DataError(f"{source}: expected a JSON object mapping image paths to entries")
    entries, problems = [], []
    for image, raw in data.items():
        entry = _entry(image, raw)
        if isinstance(entry, str):
            problems.append(f"{source}: entry {image!r}: {entry}")
        else:
            entries.append(entry)
    _raise_first(problems)
    return tuple(entries)


def _raise_first(problems: Sequence[str]) -> None:
    if problems:
        more = f" (and {len(problems) - 1} more problem(s) like it)" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)


def select(entries: Iterable[Entry], datasets: Sequence[str] | None = None, sample: int | None = None,
           seed: int = 0) -> tuple[Entry, ...]:
    """Entries of the named datasets (all when None); with `sample`, that many images per dataset,
    drawn with a seeded generator and kept in file order."""
    entries = tuple(entries)
    if datasets:
        known = dict.fromkeys(entry.dataset for entry in entries)
        unknown = [name for name in datasets if name not in known]
        if unknown:
            raise DataError(f"no dataset {', '.join(map(repr, unknown))} in the annotation file; "
                            f"it has: {', '.join(known)}")
        entries = tuple(entry for entry in entries if entry.dataset in set(datasets))
    if sample:
        import numpy as np
        rng = np.random.default_rng(seed)
        keep: set[int] = set()
        by_dataset: dict[str, list[int]] = {}
        for index, entry in enumerate(entries):
            by_dataset.setdefault(entry.dataset, []).append(index)
        for indices in by_dataset.values():
            keep.update(indices if len(indices) <= sample else rng.choice(indices, sample, replace=False).tolist())
        entries = tuple(entry for index, entry in enumerate(entries) if index in keep)
    return entries


def check_files(root: Path, annotation: Path, entries: Iterable[Entry], templates: str, shots: int) -> None:
    """Every query image and the first `shots` templates of the chosen kind exist under `root`."""
    field = TEMPLATE_KINDS[templates]
    problems = []
    for entry in entries:
        if not (root / entry.image).is_file():
            problems.append(f"{annotation}: entry {entry.image!r}: image not found: {root / entry.image}")
            continue
        chosen = entry.templates(templates)
        if len(chosen) < shots:
            problems.append(f"{annotation}: entry {entry.image!r}: has {len(chosen)} {field}, --shots {shots} "
                            f"needs {shots}")
            continue
        for template in chosen[:shots]:
            if not (root / template).is_file():
                problems.append(f"{annotation}: entry {entry.image!r}: template image not found: {root / template}")
                break
    _raise_first(problems)


def check_knowledge(data: object, source: Path, entries: Iterable[Entry]) -> Mapping:
    """domain_knowledge.json must describe every category the entries use."""
    if not isinstance(data, Mapping):
        raise DataError(f"{source}: expected a JSON object: dataset -> category -> {{name: text}}")
    for entry in entries:
        key = knowledge_key(data, entry.dataset)
        block = data.get(key, {})
        category = block.get(entry.category) if isinstance(block, Mapping) else None
        if not isinstance(category, Mapping) or not category or not all(isinstance(v, str) for v in category.values()):
            looked = key if key == entry.dataset else f"{key} (for {entry.dataset})"
            raise DataError(f"{source}: no domain knowledge for {looked}/{entry.category} "
                            f"(needed by entry {entry.image!r}); expected {{name: text}} there")
    return data


def load_benchmark(root: Path, *, templates: str = "random", shots: int = 1, knowledge: bool = False,
                   datasets: Sequence[str] | None = None, sample: int | None = None, seed: int = 0) -> Benchmark:
    """Read and validate mmad.json (and domain_knowledge.json when asked), check the files the
    selected entries need; nothing is sent before this has passed."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (the MMAD-QA root: --root, ${ROOT_ENV}, or ./mmad-qa; "
                        f"`mmad qa synth` writes a generated set)")
    annotation = root / ANNOTATION_FILE
    entries = parse_annotation(_read_json(annotation, "the benchmark's annotation file: download it separately, "
                                                      "see docs/qa.md, or run `mmad qa synth`"), annotation)
    entries = select(entries, datasets, sample, seed)
    check_files(root, annotation, entries, templates, shots)
    data = None
    if knowledge:
        source = root / KNOWLEDGE_FILE
        data = check_knowledge(_read_json(source, "--domain-knowledge needs it"), source, entries)
    return Benchmark(root, annotation, entries, data)


def write_annotation(root: Path, entries: Mapping[str, Mapping], knowledge: Mapping | None = None) -> Path:
    """Write mmad.json (and domain_knowledge.json) atomically; used by the generated set."""
    from mmad.atomic import atomic_write_text
    path = root / ANNOTATION_FILE
    atomic_write_text(path, json.dumps(entries, indent=1, ensure_ascii=False))
    if knowledge is not None:
        atomic_write_text(root / KNOWLEDGE_FILE, json.dumps(knowledge, indent=1, ensure_ascii=False))
    return path
