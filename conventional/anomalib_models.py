"""Which anomalib models mmad runs, and the settings of one run — without importing anomalib.

`--provider anomalib:<Model>` names one of MODELS. Each model's entry says which backbones it
takes (None: it has no pretrained backbone and trains from scratch), which of its modules hold
the pretrained weights (loaded by mmad from a local file, never downloaded), whether it trains
for `--epochs` or makes one pass over the normal images, and the layer names it reads.

Backbones keep mmad's names. `efficientnet_lite0` is timm's `tf_efficientnet_lite0` with the
bundled weights (renamed key by key: mmad_conventional.anomalib_weights); the ResNets are timm's,
whose state-dict naming is torchvision's, so a local torchvision file loads as is.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from mmad.errors import ConfigError

PREFIX = "anomalib:"
LITE0 = "efficientnet_lite0"
TIMM_NAMES = {LITE0: "tf_efficientnet_lite0", "resnet18": "resnet18", "resnet50": "resnet50",
              "wide_resnet50_2": "wide_resnet50_2"}
CNNS = tuple(TIMM_NAMES)
# ResNet stages -> the EfficientNet-Lite0 blocks at the same stride (4, 8, 16, 32): the stages
# mmad's own PatchCore (blocks 2, 4) and PaDiM (1, 2, 4) read.
LITE0_LAYERS = {"layer1": "blocks.1", "layer2": "blocks.2", "layer3": "blocks.4", "layer4": "blocks.6"}
# Arguments mmad sets itself; the rest of a model's __init__ is open to --model-arg.
RESERVED_ARGS = frozenset({"backbone", "pre_trained", "pre_processor", "post_processor", "evaluator", "visualizer"})


@dataclass(frozen=True)
class ModelSpec:
    name: str  # anomalib's class name
    backbones: tuple[str, ...] | None  # None: no pretrained backbone (trains from scratch)
    default_backbone: str | None  # when --backbone is not given and the model cannot take Lite0
    pretrained: tuple[str, ...]  # attribute paths (from the Lightning module) of pretrained modules
    trained: bool  # True: --epochs of training; False: one pass (memory bank, statistics)
    layers: tuple[str, ...] | str | None = None  # anomalib's default layer(s), ResNet names
    layer_arg: str = "layers"
    lite0_args: tuple[tuple[str, object], ...] = ()  # extra arguments when the backbone is Lite0
    train_batch_size: int | None = None  # a fixed training batch size the model requires
    min_image_size: int = 32


MODELS = {spec.name: spec for spec in (
    ModelSpec("Cflow", CNNS, None, ("model.encoder.feature_extractor",), True, ("layer2", "layer3", "layer4")),
    ModelSpec("Dfm", CNNS, None, ("model.feature_extractor.feature_extractor",), False, "layer3", "layer"),
    ModelSpec("Draem", None, None, (), True),
    ModelSpec("EfficientAd", None, None, ("model.teacher",), True, train_batch_size=1,
              min_image_size=256),  # its autoencoder ends in an 8x8 kernel on a 1/32 grid
    ModelSpec("Fastflow", ("resnet18", "wide_resnet50_2"), "resnet18", ("model.feature_extractor",), True),
    ModelSpec("Ganomaly", None, None, (), True),
    ModelSpec("Padim", CNNS, None, ("model.feature_extractor.feature_extractor",), False,
              ("layer1", "layer2", "layer3"), lite0_args=(("n_features", 100),)),
    ModelSpec("Patchcore", CNNS, None, ("model.feature_extractor.feature_extractor",), False, ("layer2", "layer3")),
    ModelSpec("ReverseDistillation", ("resnet18", "resnet50", "wide_resnet50_2"), "wide_resnet50_2",
              ("model.encoder.feature_extractor",), True),
    ModelSpec("Stfpm", CNNS, None, ("model.teacher_model.feature_extractor",), True, ("layer1", "layer2", "layer3")),
)}


def is_anomalib(method: str) -> bool:
    return method.startswith(PREFIX)


def model_spec(method: str) -> ModelSpec:
    """`anomalib:cflow` -> Cflow's entry (case-insensitive); anything else is one line."""
    wanted = method[len(PREFIX):] if is_anomalib(method) else method
    for name, spec in MODELS.items():
        if name.lower() == wanted.lower():
            return spec
    raise ConfigError(f"unknown anomalib model {wanted!r}; mmad runs {', '.join(sorted(MODELS))}")


def anomalib_version() -> str:
    try:
        return metadata.version("anomalib")
    except metadata.PackageNotFoundError:
        raise ConfigError("anomalib models need the extra: pip install 'mmad[anomalib]'") from None


def resolve_backbone(spec: ModelSpec, asked: str | None) -> str | None:
    """The backbone a run uses: the one asked for, else Lite0 where the model takes it (its
    weights are bundled), else anomalib's default for the model."""
    if spec.backbones is None:
        if asked is not None:
            raise ConfigError(f"anomalib:{spec.name} has no pretrained backbone (it trains from scratch); "
                              f"drop --backbone")
        return None
    backbone = asked or (LITE0 if LITE0 in spec.backbones else spec.default_backbone)
    if backbone not in spec.backbones:
        raise ConfigError(f"anomalib:{spec.name} cannot use --backbone {backbone}; it takes "
                          f"{', '.join(spec.backbones)}")
    return backbone


def _layers(spec: ModelSpec, backbone: str | None):
    if spec.layers is None or backbone != LITE0:
        return None  # anomalib's own default for its default backbones
    if isinstance(spec.layers, str):
        return LITE0_LAYERS[spec.layers]
    return [LITE0_LAYERS[layer] for layer in spec.layers]


def init_args(spec: ModelSpec, backbone: str | None, model_args: dict, coreset_ratio: float | None) -> dict:
    """The keyword arguments the model is built with (recorded in run.json), mmad's own first."""
    args: dict = {}
    if backbone is not None:
        args["backbone"] = TIMM_NAMES[backbone]
        layers = _layers(spec, backbone)
        if layers is not None:
            args[spec.layer_arg] = layers
        if backbone == LITE0:
            args.update(dict(spec.lite0_args))
        elif spec.name == "Padim" and backbone == "resnet50":
            args["n_features"] = 550  # as anomalib's Wide-ResNet default: the same 1792 channels
    if coreset_ratio is not None:
        args["coreset_sampling_ratio"] = coreset_ratio
    reserved = RESERVED_ARGS & set(model_args)
    if reserved:
        raise ConfigError(f"--model-arg {', '.join(sorted(reserved))}: set by mmad (use --backbone, --weights or "
                          f"--random-weights)")
    args.update(model_args)
    return args


def file_digest(path: Path | None) -> str | None:
    """sha256 of a weights file, so a file replaced under the same name is a different setting."""
    if path is None:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise ConfigError(f"weights file {path}: {exc.strerror or exc}") from None


def _check_folders(spec: ModelSpec, model_args: dict) -> None:
    """anomalib downloads a missing auxiliary data set; mmad never does, so a folder must exist."""
    if spec.name == "EfficientAd" and "imagenet_dir" not in model_args:
        raise ConfigError("anomalib:EfficientAd trains its student against ImageNet images: pass --model-arg "
                          "imagenet_dir=DIR (a folder of class subfolders of images, e.g. imagenette2); "
                          "nothing is downloaded")
    for key in ("imagenet_dir", "dtd_dir"):
        if key in model_args and not (isinstance(model_args[key], str) and Path(model_args[key]).is_dir()):
            raise ConfigError(f"--model-arg {key}={model_args[key]}: no such folder (nothing is downloaded)")


@dataclass(frozen=True)
class AnomalibPlan:
    """Everything one anomalib run is built from, resolved before any work."""

    spec: ModelSpec
    backbone: str | None
    init_args: dict
    epochs: int | None  # None: one pass (the model's own trainer arguments)
    weights: Path | None  # a local file; None: the bundled Lite0 weights, or random ones
    random_weights: bool

    @property
    def needs_weights(self) -> bool:
        return bool(self.spec.pretrained) and not self.random_weights

    def settings(self) -> dict:
        return {"model": self.spec.name, "version": anomalib_version(),
                "init_args": json.loads(json.dumps(self.init_args, default=str))}


def plan(method: str, *, backbone: str | None, weights: Path | None, random_weights: bool, epochs: int,
         epochs_given: bool, coreset_ratio: float | None, model_args: dict, image_size: int) -> AnomalibPlan:
    """Check a run's options against the model (one line for anything it would ignore or could not
    do offline) and resolve its settings."""
    spec = model_spec(method)
    chosen = resolve_backbone(spec, backbone)
    if image_size < spec.min_image_size:
        raise ConfigError(f"anomalib:{spec.name} needs --image-size {spec.min_image_size} or more, not {image_size}")
    if coreset_ratio is not None and spec.name != "Patchcore":
        raise ConfigError(f"--coreset-ratio is PatchCore's; anomalib:{spec.name} has no coreset")
    if epochs_given and not spec.trained:
        raise ConfigError(f"--epochs: anomalib:{spec.name} makes one pass over the normal images; it does not train")
    if not spec.pretrained and weights is not None:
        raise ConfigError(f"--weights: anomalib:{spec.name} has no pretrained part (it trains from scratch)")
    if weights is not None and random_weights:
        raise ConfigError("--weights and --random-weights contradict each other; give one")
    if spec.pretrained and weights is None and not random_weights and chosen != LITE0:
        what = f"its {chosen} backbone" if chosen else "its pretrained teacher (anomalib's pretrained_teacher_*.pth)"
        raise ConfigError(f"anomalib:{spec.name} needs weights for {what} and none are bundled: pass --weights FILE "
                          f"(nothing is downloaded), or --random-weights to run untrained weights (tests only)")
    _check_folders(spec, model_args)
    args = init_args(spec, chosen, model_args, coreset_ratio)
    if spec.name == "Draem":
        args.setdefault("dtd_dir", None)  # None: Perlin-noise anomalies only (no DTD textures offline)
    return AnomalibPlan(spec, chosen, args, epochs if spec.trained else None, weights, random_weights)
