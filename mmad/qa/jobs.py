"""MMAD-QA questions -> engine jobs: one plan (one result CSV + JSONL) per dataset.

Images (`--images`): k normal templates (the entry's `random_templates`, or `similar_templates`)
then the query.
  - `published` (default): as gpt4o.py prepares them (mmad.data.recipes `mmad-qa`): fitted into
    512x512 by OpenCV, small images enlarged, INTER_AREA, JPEG bytes, the media type named from
    the file's extension (Anthropic: the true type, `mmad-qa-true-type`);
  - `mmad`: fitted into 512x512 with the aspect kept and never enlarged: an image taller than
    wide (or square) gets height 512, a wider one height floor(h * 512 / w), the width following
    mmad's height rule, LANCZOS, PNG (cache token `box<=512x512:trunc:lanczos:png`).

Modes (`--mode`):
  - cumulative (default; gpt4o.py): question i of an image is ONE request holding questions
    1..i, no answers; the answer to question i is read from its reply (the last letter). Every
    request stands alone: a refused or failed question does not stop the image's later ones.
  - single: one request per question (the questions[i:i+1] of MMAD's open-model scripts).
  - conversation (the open-model scripts' `--record_history`; mmad's earlier "cumulative"):
    question i is asked after questions 1..i-1 and the model's own replies to them as earlier
    turns. Turn i can only be built once turn i-1 is answered, so a plan holds each image's
    answered turns plus its next one, whose `follow_up` builds the turn after it from the
    recorded reply; a rerun rebuilds the chain from the JSONL records (matched by cache key,
    which includes the whole history), so nothing answered is asked or paid again. A turn whose
    reply is unusable as conversation (refused after every re-ask, an error, an empty reply)
    ends the chain: the later questions of that image are recorded as `error` ("not asked ..."),
    without a request; `--retry-failed` asks the failed turn again and the chain goes on. A
    `parse_failed` turn keeps its reply in the history: the conversation did go that way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from PIL import Image

from mmad.cache.store import cache_key
from mmad.data import datasets
from mmad.data.filememo import FileMemo
from mmad.data.images import ImageRef, ImageSpec
from mmad.engine.jobs import safe_name
from mmad.engine.records import RunLogs, best_records
from mmad.engine.work import ImageInput, Job, SubsetPlan
from mmad.errors import DataError
from mmad.providers.base import Request
from mmad.qa.data import Benchmark, Entry, Question
from mmad.qa.prompt import QAPrompt
from mmad.qa.task import QATask
from mmad.reading import open_file

BOX = 512
MODES = ("cumulative", "single", "conversation")
IMAGE_RULES = ("published", "mmad")
CONTINUING = ("ok", "parse_failed")
NOT_ASKED = "not asked: an earlier question of this image got no usable reply"
PLACEHOLDER_REPLY = "A"  # stands in for replies not yet given, in estimates of conversation runs


def box_height(width: int, height: int, box: int = BOX) -> int:
    """The height that fits (width, height) into box x box under mmad's height rule, never enlarging."""
    if width > height and width > box:
        return max(1, height * box // width)
    return box


def box_token(detail: str | None, box: int = BOX) -> str:
    token = f"box<={box}x{box}:trunc:lanczos:png"
    return token if detail is None else f"{token}:detail-{detail}"


@dataclass(frozen=True)
class QAOptions:
    """Everything besides the data that defines the requests (and so the cache keys)."""

    identity: Mapping[str, str]
    model: str
    mode: str = "cumulative"
    templates: str = "random"
    shots: int = 1
    knowledge: bool = False
    detail: str | None = "low"  # OpenAI image detail; None: not sent
    max_tokens: int = 200
    temperature: float | None = None  # None: not sent (gpt4o.py sends none)
    images: str = "published"  # or "mmad" (see the module docstring)
    true_media_type: bool = False  # published images labelled as JPEG, not by extension (Anthropic)

    @property
    def recipe(self) -> str | None:
        if self.images != "published":
            return None
        return "mmad-qa-true-type" if self.true_media_type else "mmad-qa"

    @property
    def image_token(self) -> str:
        """What run.json records about the images (without the detail)."""
        from mmad.data.recipes import recipe_token
        return recipe_token(self.recipe) if self.recipe else box_token(None)


@dataclass(frozen=True)
class Chain:
    """One image: its questions, its images in request order, and the text opening its first message."""

    entry: Entry
    query: Path
    images: tuple[ImageInput, ...]
    opening: str


class TurnBuilder:
    """Builds the job of question i of an image, given the conversation before it."""

    def __init__(self, opts: QAOptions, prompt: QAPrompt) -> None:
        self.opts = opts
        self.prompt = prompt

    @property
    def conversation(self) -> bool:
        return self.opts.mode == "conversation"

    def asked(self, chain: Chain, index: int) -> tuple[Question, ...]:
        """The questions the request of question `index` holds (see the module docstring)."""
        questions = chain.entry.questions
        return questions[:index + 1] if self.opts.mode == "cumulative" else questions[index:index + 1]

    def _user_parts(self, chain: Chain, index: int) -> tuple:
        text = "".join(self.prompt.question_text(q) for q in self.asked(chain, index))
        if index == 0 or not self.conversation:
            return tuple(image.ref for image in chain.images) + (chain.opening + text,)
        return (text,)

    def _fields(self, chain: Chain, question: Question) -> dict:
        return {"question_id": question.qid, "question": question.number, "subtask": question.subtask,
                "correct": question.answer, "mode": self.opts.mode, "letter": None}

    def job(self, chain: Chain, index: int, history: tuple = ()) -> Job:
        question = chain.entry.questions[index]
        request = Request(self.prompt.system_message, self._user_parts(chain, index), self.opts.model,
                          self.opts.temperature, self.opts.max_tokens, history=history)
        key = cache_key(dict(self.opts.identity), request)
        follow = None
        if self.conversation and index + 1 < len(chain.entry.questions):
            follow = partial(self._after, chain, index, history, key)
        return Job(chain.entry.dataset, chain.entry.dataset, chain.entry.image, None, chain.query, request, key,
                   "qa", chain.images, self._fields(chain, question), follow)

    def _extend(self, chain: Chain, index: int, history: tuple, reply: str) -> tuple:
        return history + (("user", self._user_parts(chain, index)), ("assistant", (reply,)))

    def _after(self, chain: Chain, index: int, history: tuple, key: str, record: dict) -> Job:
        """The follow-up of turn `index`: the next question, or the chain's end as not-asked records."""
        if continues(record):
            return self.job(chain, index + 1, self._extend(chain, index, history, record["raw"]))
        return self.not_asked(chain, index + 1, key, chained=True)

    def not_asked(self, chain: Chain, index: int, failed_key: str, *, chained: bool) -> Job:
        """A question after a failed turn: recorded as an error without any request."""
        question = chain.entry.questions[index]
        key = hashlib.sha256(f"qa-not-asked|{failed_key}|{question.qid}".encode()).hexdigest()
        follow = None
        if chained and index + 1 < len(chain.entry.questions):
            follow = lambda record: self.not_asked(chain, index + 1, failed_key, chained=True)  # noqa: E731
        request = Request(self.prompt.system_message, (f"(not asked) {question.qid}",), self.opts.model)
        return Job(chain.entry.dataset, chain.entry.dataset, chain.entry.image, None, chain.query, request, key,
                   "qa", (), self._fields(chain, question), follow,
                   local={"source": "chain", "status": "error", "reason": NOT_ASKED})

    def walk(self, chain: Chain, best: Mapping[str, dict], *, retry_failed: bool = False
             ) -> tuple[list[Job], list[dict | None]]:
        """(the jobs a run holds for this image, the record of each question or None)."""
        count = len(chain.entry.questions)
        if not self.conversation:
            jobs = [self.job(chain, index) for index in range(count)]
            return jobs, [best.get(job.key) for job in jobs]
        jobs, resolved, history = [], [], ()
        for index in range(count):
            job = self.job(chain, index, history)
            record = best.get(job.key)
            resolved.append(record)
            if record is not None and continues(record):
                # answered: the walk itself holds the next turn, so no follow-up (a --retry-failed
                # re-read of this turn from the cache must not re-record every later turn)
                jobs.append(replace(job, follow_up=None))
                history = self._extend(chain, index, history, record["raw"])
                continue
            jobs.append(job)
            if record is not None and not retry_failed:
                for later in range(index + 1, count):
                    blocked = self.not_asked(chain, later, job.key, chained=False)
                    jobs.append(blocked)
                    resolved.append(best.get(blocked.key))
            break
        resolved += [None] * (count - len(resolved))
        return jobs, resolved

    def pending(self, chain: Chain, best: Mapping[str, dict], *, retry_failed: bool = False) -> list[Job]:
        """The requests a run would still send for this image; in conversation mode the replies
        not yet given are stood in for by a one-letter reply."""
        def todo(record):
            return record is None or (retry_failed and record.get("status") != "ok")
        if not self.conversation:
            return [job for job in self.walk(chain, best)[0] if todo(best.get(job.key))]
        jobs, history, guessing = [], (), False
        for index in range(len(chain.entry.questions)):
            job = self.job(chain, index, history)
            record = None if guessing else best.get(job.key)
            if todo(record):
                jobs.append(job)
                guessing = True
            elif record is None or not continues(record):  # (None is never here: todo(None))
                break  # the chain ends here; nothing later is sent
            reply = record["raw"] if record is not None and continues(record) else PLACEHOLDER_REPLY
            history = self._extend(chain, index, history, reply)
        return jobs


def continues(record: Mapping) -> bool:
    """Whether a turn's reply can stand in the conversation (see the module docstring)."""
    return record.get("status") in CONTINUING and bool((record.get("raw") or "").strip())


@dataclass(frozen=True)
class QAPlan(SubsetPlan):
    """A dataset's plan, with what it takes to map records back to every question."""

    chains: tuple[Chain, ...] = ()
    builder: TurnBuilder = field(kw_only=True, compare=False)

    @property
    def questions(self) -> int:
        return sum(len(chain.entry.questions) for chain in self.chains)

    def resolve(self, best: Mapping[str, dict]) -> list[tuple[Question, dict | None]]:
        """Every question of the dataset in file order, with its record (None: not answered yet)."""
        out: list[tuple[Question, dict | None]] = []
        for chain in self.chains:
            out.extend(zip(chain.entry.questions, self.builder.walk(chain, best)[1]))
        return out


def _sizes(paths: Sequence[Path], owners: Mapping[Path, str], annotation: Path, workers: int) -> dict[Path, tuple]:
    def header(path: Path) -> tuple[int, int]:
        try:
            with open_file(path) as image_file, Image.open(image_file) as image:
                return image.size
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise DataError(f"{annotation}: entry {owners[path]!r}: cannot read image {path} "
                            f"({type(exc).__name__}: {exc})") from None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(paths, pool.map(header, paths)))


def build_qa_plans(bench: Benchmark, opts: QAOptions, prompt: QAPrompt, *, out_dir: Path, run_name: str,
                   memo: FileMemo | None = None, retry_failed: bool = False, workers: int = 8,
                   answer_parsing: str = "official") -> list[QAPlan]:
    """Every dataset's plan; image headers and hashes are read once (hashes memoised), so a
    rerun costs a stat per file."""
    memo = memo or FileMemo(None)
    owners: dict[Path, str] = {}
    for entry in bench.entries:
        for rel in (entry.image, *entry.templates(opts.templates)[:opts.shots]):
            owners.setdefault(bench.root / rel, entry.image)
    paths = list(owners)
    sizes = _sizes(paths, owners, bench.annotation, workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        hashes = dict(zip(paths, pool.map(memo.sha256, paths)))
    memo.flush()
    token = box_token(opts.detail)

    def image_input(rel: str) -> ImageInput:
        path = bench.root / rel
        if opts.recipe is not None:
            spec = ImageSpec(max_height=None, detail=opts.detail, recipe=opts.recipe)
            return ImageInput(ImageRef(hashes[path], spec.token), path, spec)
        spec = ImageSpec(max_height=box_height(*sizes[path]), detail=opts.detail)
        return ImageInput(ImageRef(hashes[path], token), path, spec)

    builder = TurnBuilder(opts, prompt)
    plans = []
    for name in bench.datasets:
        entries = [entry for entry in bench.entries if entry.dataset == name]
        chains = tuple(Chain(entry, bench.root / entry.image,
                             tuple(image_input(rel) for rel in entry.templates(opts.templates)[:opts.shots])
                             + (image_input(entry.image),),
                             prompt.opening(opts.shots, bench.knowledge_text(entry)))
                       for entry in entries)
        stem = f"{run_name}_{safe_name(name)}"
        csv_path, jsonl_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.jsonl"
        best = best_records(RunLogs().read(jsonl_path))
        jobs = [job for chain in chains for job in builder.walk(chain, best, retry_failed=retry_failed)[0]]
        subset = datasets.Subset(name, name, "MMAD", None, name, bench.annotation, bench.root, bench.root)
        task = QATask({q.qid: q.option_map for entry in entries for q in entry.questions}, answer_parsing)
        plans.append(QAPlan(subset, prompt.name, (), tuple(jobs), csv_path, jsonl_path, task, chains,
                            builder=builder))
    return plans


def pending_plans(plans: Sequence[QAPlan], *, retry_failed: bool = False) -> list[SubsetPlan]:
    """Plans of the requests a run would still send (for estimates and dry runs)."""
    out: list[SubsetPlan] = []
    for plan in plans:
        best = best_records(RunLogs().read(plan.jsonl_path))
        jobs = [job for chain in plan.chains for job in plan.builder.pending(chain, best, retry_failed=retry_failed)]
        out.append(replace(plan, jobs=tuple(jobs)))
    return out
