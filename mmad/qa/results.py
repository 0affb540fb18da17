"""MMAD-QA result files: our per-dataset CSV, and the reference scripts' answers JSON.

Our CSV, one row per question in annotation order (the JSONL beside it keeps every record):

    question_id,image,subtask,correct,predicted,status,note

`predicted` is empty unless `status` is `ok`; `status` is ok / parse_failed / refused / error
(an error whose note starts "not asked" is a cumulative question after a failed turn) /
pending (no answer yet). The reference's `answers_*.json` (a list of {image, question_type,
correct_answer, gpt_answer}) is read too, so its runs can be evaluated and compared here; a
`gpt_answer` outside A-E is a failure there, as the reference drops it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mmad.errors import DataError
from mmad.reading import open_file, read_text

QA_HEADER = ("question_id", "image", "subtask", "correct", "predicted", "status", "note")
STATUSES = ("ok", "parse_failed", "refused", "error", "pending")
LETTERS = frozenset("ABCDE")


@dataclass(frozen=True)
class QARow:
    question_id: str
    image: str
    subtask: str
    correct: str
    predicted: str | None
    status: str
    note: str = ""

    @property
    def dataset(self) -> str:
        return self.image.split("/")[0]

    @property
    def answered(self) -> bool:
        return self.status == "ok" and self.predicted is not None


def write_qa_csv(path: Path, rows: Sequence[QARow]) -> None:
    from mmad.atomic import atomic_write_text
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(QA_HEADER)
    for row in rows:
        writer.writerow((row.question_id, row.image, row.subtask, row.correct, row.predicted or "", row.status,
                         row.note))
    atomic_write_text(path, buffer.getvalue())


def is_qa_csv(path: Path) -> bool:
    try:
        with open_file(path, "r", encoding="utf-8", newline="") as handle:
            return tuple(next(csv.reader(handle), ())) == QA_HEADER
    except (OSError, UnicodeDecodeError):
        return False


def read_qa_csv(path: Path) -> list[QARow]:
    rows = []
    try:
        with open_file(path, "r", encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            if tuple(next(reader, ())) != QA_HEADER:
                raise DataError(f"{path}: not an MMAD-QA result file (expected the header {','.join(QA_HEADER)})")
            for line, values in enumerate(reader, start=2):
                if len(values) != len(QA_HEADER):
                    raise DataError(f"{path}: line {line}: expected {len(QA_HEADER)} fields, found {len(values)}")
                qid, image, subtask, correct, predicted, status, note = values
                if status not in STATUSES or correct not in LETTERS or (predicted and predicted not in LETTERS) \
                        or (status == "ok") != bool(predicted):
                    raise DataError(f"{path}: line {line}: status {status!r}, correct {correct!r}, predicted "
                                    f"{predicted!r} do not fit together (an ok row has a letter A-E, others none)")
                rows.append(QARow(qid, image, subtask, correct, predicted or None, status, note))
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return rows


def read_reference_answers(path: Path) -> list[QARow]:
    """The reference scripts' answers JSON; question ids are `<image>#<n>` in file order per image."""
    try:
        data = json.loads(read_text(path, "utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read the answers JSON ({exc})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of answers (the reference's answers_*.json)")
    rows: list[QARow] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(data):
        if not isinstance(item, dict) or not all(k in item for k in ("image", "question_type", "correct_answer")):
            raise DataError(f"{path}: answer {index}: needs image, question_type, correct_answer, gpt_answer")
        image = str(item["image"])
        seen[image] = seen.get(image, 0) + 1
        correct, answer = str(item["correct_answer"]), item.get("gpt_answer")
        qid = f"{image}#{seen[image]}"
        if correct not in LETTERS:
            rows.append(QARow(qid, image, str(item["question_type"]), "A", None, "error",
                              f"correct answer {correct!r} is not A-E"))
        elif answer in LETTERS:
            rows.append(QARow(qid, image, str(item["question_type"]), correct, answer, "ok"))
        else:
            rows.append(QARow(qid, image, str(item["question_type"]), correct, None, "parse_failed",
                              f"answer {str(answer)[:40]!r} is not A-E"))
    return rows


def run_label(path: Path) -> str:
    """A run's name: its run.json, else the folder name (our CSVs) or the file stem (answers JSON)."""
    from mmad.results.runinfo import read_run_info
    if path.suffix == ".json":
        return path.stem
    info = read_run_info(path.parent)
    return str(info["run"]) if info and info.get("run") else path.parent.name


def load_runs(inputs: Sequence[Path], skipped: list[Path] | None = None) -> dict[str, list[QARow]]:
    """Run label -> every row of its result files. Folders are searched for our CSVs (the folders
    of other CSVs, score or classification runs, are appended to `skipped`); an answers JSON of
    the reference is read when named."""
    files: list[Path] = []
    for source in inputs:
        if source.is_dir():
            csvs = sorted(source.rglob("*.csv"))
            found = [p for p in csvs if is_qa_csv(p)]
            if skipped is not None:
                skipped.extend(f for f in dict.fromkeys(p.parent for p in csvs if not is_qa_csv(p))
                               if f not in skipped)
            if not found:
                raise DataError(f"{source}: no MMAD-QA result CSV here (header {','.join(QA_HEADER)})")
            files.extend(found)
        elif source.is_file():
            files.append(source)
        else:
            raise DataError(f"{source}: no such file or folder")
    runs: dict[str, list[QARow]] = {}
    homes: dict[str, Path] = {}  # label -> the folder (or answers file) it came from
    for path in files:
        rows = read_reference_answers(path) if path.suffix == ".json" else read_qa_csv(path)
        home = path if path.suffix == ".json" else path.parent
        label = run_label(path)
        if homes.setdefault(label, home) != home:  # two runs of one name: tell them apart by folder
            label = f"{label} ({home})"
            homes.setdefault(label, home)
        runs.setdefault(label, []).extend(rows)
    for label, rows in runs.items():
        ids = [row.question_id for row in rows]
        if len(set(ids)) != len(ids):
            raise DataError(f"run {label!r}: a question id appears twice (two result files of one run overlap?)")
    return runs
