"""MAD-Bench data layer: the registry, the on-disk layout, templates, references, validation.

The published layout under a data root::

    Industry/{mvtec,visa}/<subset>/train/good/         normal references
    Industry/{mvtec,visa}/<subset>/test/<template path>
    Medical/<name>/level_0_train/                      normal references
    Medical/<name>/<template path>
    OneClassNovelty/multidog/level_0_train/<breed>/    normal references
    OneClassNovelty/multidog/<template path>
    template/<dataset>_<subset>_template.csv           (medical: <dataset>_template.csv)

Anything else placed in the same layout is discovered from its template file name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmad.data.templates import Template, first_rows, read_template
from mmad.errors import DataError
from mmad.paths import describe_target, require_folder

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
PROMPT_FAMILIES = ("industrial", "novelty", "drd", "covid19", "skin-lesion")
DOMAINS = ("Industry", "Medical", "OneClassNovelty")
DOMAIN_FAMILY = {"Industry": "industrial", "OneClassNovelty": "novelty"}


@dataclass(frozen=True)
class DatasetSpec:
    """One MAD-Bench dataset as published."""

    name: str
    domain: str
    prompt_family: str
    levels: int  # number of severity levels including 0 (after rounding up)
    subsets: tuple[str, ...]
    rows: int  # test rows in the published templates

    @property
    def single_subset(self) -> bool:
        """Medical datasets have one subset named like the dataset."""
        return self.domain == "Medical"


MVTEC = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
         "pill", "screw", "tile", "transistor", "wood", "zipper")
VISA = ("capsules", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1", "pcb2", "pcb3",
        "pipe_fryum")
MULTIDOG = ("bichon_frise", "chinese_rural_dog", "golden_retriever", "labrador_retriever", "teddy")

REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("mvtec", "Industry", "industrial", 4, MVTEC, 1504),
        DatasetSpec("visa", "Industry", "industrial", 4, VISA, 1469),
        DatasetSpec("multidog", "OneClassNovelty", "novelty", 5, MULTIDOG, 12500),
        DatasetSpec("diabetic-retinopathy", "Medical", "drd", 5, ("diabetic-retinopathy",), 3500),
        DatasetSpec("covid19", "Medical", "covid19", 7, ("covid19",), 661),
        DatasetSpec("skin-lesion", "Medical", "skin-lesion", 4, ("skin-lesion",), 1969),
    )
}


def industrial_subject(subset: str) -> str:
    """The object name the reference scripts put into the industrial prompt."""
    if subset.startswith("pcb"):
        return "printed circuit board (PCB)"
    if subset.startswith("macaroni"):
        return "macaroni"
    return subset.replace("_", " ")


def default_subject(prompt_family: str, subset: str) -> str:
    """Subject text for `{subject}` in a prompt; novelty keeps the raw breed name as the scripts do."""
    if prompt_family == "industrial":
        return industrial_subject(subset)
    if prompt_family == "novelty":
        return subset
    return subset.replace("_", " ")


@dataclass(frozen=True)
class Subset:
    """Everything needed to find one subset's files under a data root."""

    dataset: str
    subset: str
    domain: str
    prompt_family: str | None
    subject: str
    template_path: Path
    test_root: Path
    reference_dir: Path

    @property
    def label(self) -> str:
        return self.dataset if self.dataset == self.subset else f"{self.dataset}/{self.subset}"


def template_name(dataset: str, subset: str) -> str:
    return f"{dataset}_template.csv" if dataset == subset else f"{dataset}_{subset}_template.csv"


def layout_paths(root: Path, domain: str, dataset: str, subset: str) -> tuple[Path, Path]:
    """(test root, reference folder) for a subset in the published layout."""
    if domain == "Industry":
        base = root / "Industry" / dataset / subset
        return base / "test", base / "train" / "good"
    if domain == "Medical":
        base = root / "Medical" / dataset
        return base, base / "level_0_train"
    if domain == "OneClassNovelty":
        base = root / "OneClassNovelty" / dataset
        return base, base / "level_0_train" / subset
    raise DataError(f"unknown domain {domain!r}; expected one of {', '.join(DOMAINS)}")


def make_subset(root: Path, domain: str, dataset: str, subset: str,
                prompt_family: str | None = None, subject: str | None = None) -> Subset:
    family = prompt_family or _known_family(dataset) or DOMAIN_FAMILY.get(domain)
    if family is not None and family not in PROMPT_FAMILIES:
        raise DataError(f"unknown prompt family {family!r}; expected one of {', '.join(PROMPT_FAMILIES)}")
    test_root, ref_dir = layout_paths(root, domain, dataset, subset)
    return Subset(
        dataset=dataset,
        subset=subset,
        domain=domain,
        prompt_family=family,
        subject=subject or default_subject(family or "", subset),
        template_path=root / "template" / template_name(dataset, subset),
        test_root=test_root,
        reference_dir=ref_dir,
    )


def _known_family(dataset: str) -> str | None:
    spec = REGISTRY.get(dataset)
    return spec.prompt_family if spec else None


def discover(root: Path) -> list[Subset]:
    """Every subset whose template file is under `root/template`, known or not.

    An unknown template `a_b_c_template.csv` is matched to the layout folder that exists:
    `Industry/a/b_c`, `OneClassNovelty/a/level_0_train/b_c`, `Medical/a_b_c`, trying each split.
    """
    found: list[Subset] = []
    require_folder(root, "the data root")
    template_dir = require_folder(root / "template", "the template folder")
    if not template_dir.is_dir():
        return found
    for path in sorted(template_dir.glob("*_template.csv")):
        stem = path.name[: -len("_template.csv")]
        subset = _match_layout(root, stem)
        if subset is not None:
            found.append(subset)
    return found


def _match_layout(root: Path, stem: str) -> Subset | None:
    for name, spec in REGISTRY.items():
        if spec.single_subset and stem == name:
            return make_subset(root, spec.domain, name, name)
        if not spec.single_subset and stem.startswith(name + "_"):
            return make_subset(root, spec.domain, name, stem[len(name) + 1:])
    if (root / "Medical" / stem).is_dir():
        return make_subset(root, "Medical", stem, stem)
    parts = stem.split("_")
    for cut in range(1, len(parts)):
        dataset, subset = "_".join(parts[:cut]), "_".join(parts[cut:])
        if (root / "Industry" / dataset / subset).is_dir():
            return make_subset(root, "Industry", dataset, subset)
        if (root / "OneClassNovelty" / dataset / "level_0_train" / subset).is_dir():
            return make_subset(root, "OneClassNovelty", dataset, subset)
    return None


def resolve(root: Path, dataset: str, subset: str | None = None, *,
            prompt_family: str | None = None, subject: str | None = None) -> list[Subset]:
    """The subsets a command should work on; unknown names are one-line errors."""
    available = [s for s in discover(root) if s.dataset == dataset]
    spec = REGISTRY.get(dataset)
    if not available and spec is None:
        names = sorted(set(REGISTRY) | {s.dataset for s in discover(root)})
        found = describe_target(root)
        where = f"{root} ({'no such folder' if found == 'missing' else found})" if found != "a folder" else root
        raise DataError(f"unknown dataset {dataset!r} under {where}; known: {', '.join(names)}")
    if spec is not None:
        # Known datasets resolve from the registry even before the files are present,
        # so validation can say exactly which template is missing.
        known = {s.subset: s for s in available}
        for name in spec.subsets:
            known.setdefault(name, make_subset(root, spec.domain, dataset, name))
        available = [known[name] for name in sorted(known)]
    if subset is not None:
        available = [s for s in available if s.subset == subset]
        if not available:
            subsets = spec.subsets if spec else sorted(s.subset for s in discover(root) if s.dataset == dataset)
            raise DataError(f"unknown subset {subset!r} of {dataset}; known: {', '.join(subsets)}")
    if prompt_family is not None or subject is not None:
        available = [make_subset(root, s.domain, s.dataset, s.subset, prompt_family, subject)
                     for s in available]
    return available


# --------------------------------------------------------------------------- templates


# --------------------------------------------------------------------------- references + validation

def list_images(folder: Path) -> list[Path]:
    """The folder's image files, sorted; dot-files are skipped as the scripts' `glob` skips them
    (an AppleDouble `._000.png` beside `000.png` is no image, a hidden image is no reference)."""
    images = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
    for path in images:  # the scripts' glob would hand a FIFO or a dangling link to the model: never skip it silently
        if not path.is_file():
            raise DataError(f"{path} is {describe_target(path)} where an image file belongs: remove it or replace it")
    return images


def reference_images(subset: Subset, count: int = 3) -> list[Path]:
    """The first `count` images of the sorted normal-train folder, fixed for the whole subset."""
    if count == 0:
        return []
    if not require_folder(subset.reference_dir, f"{subset.label}: the reference folder").is_dir():
        raise DataError(f"{subset.label}: reference folder {subset.reference_dir} not found")
    images = list_images(subset.reference_dir)
    if len(images) < count:
        raise DataError(f"{subset.label}: {subset.reference_dir} holds {len(images)} images; "
                        f"{count} references are needed")
    return images[:count]


def load_subset(subset: Subset, *, check_images: bool = True) -> Template:
    """Read and validate one subset before any work: the template, then that every test image
    exists (a `stat` each; `mmad data check` decodes them fully). A file that exists but does not
    decode is that job's failure when its turn comes, not a reason to refuse the whole run."""
    if not subset.template_path.is_file():
        found = describe_target(subset.template_path)
        if found not in ("missing", "a folder") and not found.startswith("a dangling"):
            raise DataError(f"{subset.label}: template {subset.template_path} is {found}, not a file")
        raise DataError(f"{subset.label}: template {subset.template_path} not found "
                        f"(run `mmad data fetch` or `mmad data synth`)")
    template = read_template(subset.template_path)
    if check_images:
        problems = [line for line, rel in enumerate(template.paths, start=2)
                    if not (subset.test_root / rel).is_file()]
        if problems:
            example = subset.test_root / template.paths[problems[0] - 2]
            found = describe_target(example)
            what = "missing image(s)" if found == "missing" else "image(s) that are no regular file"
            raise DataError(f"{subset.template_path}: {len(problems)} {what} at line(s) {first_rows(problems)} "
                            f"(e.g. {example}{'' if found == 'missing' else ': ' + found})")
    return template
