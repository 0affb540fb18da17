"""One subset's anomalib model, trained and scored through anomalib's own Engine.

The model is built with mmad's settings (mmad_conventional.anomalib_models.plan), with downloads
off and its pretrained part loaded from a local file; its pre-processor only normalises (mmad's
loader has resized the images) and it has no post-processor, so image scores are the model's
raw scores (no min-max normalisation into ties) and anomaly maps are its own, pooled to the
built-ins' stride-8 grid for the .maps.npz the hybrid gate and contours read.

Stops: a Lightning callback asks mmad's stop check before every training, validation and
prediction batch (a stop inside one of anomalib's own long steps, such as PatchCore's coreset,
takes effect when that step ends). Lightning turns a SIGTERM into SIGTERMException and a second
Ctrl-C (mmad's `Aborted`) into `sys.exit(1)`; both are turned back into mmad's stop and abort.
"""

from __future__ import annotations

import contextlib
import inspect
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from mmad.errors import ConfigError

from .anomalib_data import ImageList, NormalImages, image_loader
from .anomalib_env import import_anomalib, quiet_logs
from .anomalib_models import LITE0, AnomalibPlan
from .anomalib_weights import load_into, no_downloads, read_weights, submodule

import_anomalib()
from anomalib import models as anomalib_models  # noqa: E402
from anomalib.engine import Engine  # noqa: E402
from anomalib.pre_processing import PreProcessor  # noqa: E402
from lightning.pytorch import Callback, seed_everything  # noqa: E402
from lightning.pytorch.utilities.exceptions import SIGTERMException  # noqa: E402
from torchvision.transforms.v2 import Compose, Normalize  # noqa: E402

# EfficientNet-Lite0's input scaling, (x - 127) / 128 on 0..255 pixels (backbone.normalize).
LITE0_NORMALIZE = Normalize(mean=[127 / 255] * 3, std=[128 / 255] * 3)
MAP_STRIDE = 8  # the built-in PatchCore's grid: image_size / 8 cells a side


def model_class(plan: AnomalibPlan):
    return getattr(anomalib_models, plan.spec.name)


def check_model_args(plan: AnomalibPlan) -> None:
    """Every argument is one the model's __init__ takes (before any work, one line)."""
    accepted = inspect.signature(model_class(plan).__init__).parameters
    unknown = sorted(set(plan.init_args) - set(accepted))
    if unknown:
        names = ", ".join(p for p in accepted if p not in ("self", "pre_processor", "post_processor",
                                                              "evaluator", "visualizer", "backbone", "pre_trained"))
        raise ConfigError(f"anomalib:{plan.spec.name} takes no argument {', '.join(unknown)} (it takes: {names})")


def pre_processor(plan: AnomalibPlan, image_size: int) -> PreProcessor:
    """The model's own pre-processor at `image_size` (its Resize is then a no-op on mmad's
    resized images), with Lite0's input scaling in place of ImageNet's for the Lite0 backbone."""
    default = model_class(plan).configure_pre_processor(image_size=(image_size, image_size))
    if plan.backbone != LITE0:
        return default
    steps = [LITE0_NORMALIZE if isinstance(step, Normalize) else step for step in default.transform.transforms]
    return PreProcessor(transform=Compose(steps))


def build_model(plan: AnomalibPlan, image_size: int, scratch: Path):
    """The Lightning module, its pretrained modules loaded from a local file (or left random)."""
    args = dict(plan.init_args)
    if plan.spec.name == "Draem" and args.get("dtd_dir") is None:
        args["dtd_dir"] = str(scratch / "no-dtd")  # an empty folder: Perlin-noise anomalies, no download
        Path(args["dtd_dir"]).mkdir(exist_ok=True)
    try:
        with no_downloads(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = model_class(plan)(**args, pre_processor=pre_processor(plan, image_size), post_processor=False,
                                      evaluator=False, visualizer=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"anomalib:{plan.spec.name}: {str(exc).splitlines()[0][:200]}") from None
    if plan.needs_weights:
        state = read_weights(plan.weights, plan.backbone)
        source = plan.weights or "the bundled EfficientNet-Lite0 weights"
        for dotted in plan.spec.pretrained:
            load_into(submodule(model, dotted), state, source, f"anomalib:{plan.spec.name}'s {dotted}")
    if plan.spec.name == "EfficientAd":
        model.prepare_pretrained_model = lambda: None  # the teacher is loaded above (or random): no download
    return model


class _Watch(Callback):
    """mmad's stop check before every batch; training progress per epoch; the exception that
    interrupted Lightning (which exits on a KeyboardInterrupt instead of raising it)."""

    def __init__(self, check_stop: Callable[[], None] | None, on_epoch: Callable[[int, int], None] | None) -> None:
        self.check_stop = check_stop or (lambda: None)
        self.on_epoch = on_epoch
        self.exception: BaseException | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.check_stop()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.check_stop()

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.check_stop()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.on_epoch is not None:
            self.on_epoch(trainer.current_epoch + 1, max(trainer.max_epochs or 1, 1))

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.exception = exception


class AnomalibDetector:
    """fit(train images) once, then score(test images) batch by batch; close() removes the scratch folder."""

    def __init__(self, plan: AnomalibPlan, *, image_size: int, batch_size: int, seed: int, device: torch.device,
                 label: str) -> None:
        self.plan, self.image_size, self.batch_size, self.seed = plan, image_size, batch_size, seed
        self.device, self.label = device, label
        self.scratch = Path(tempfile.mkdtemp(prefix="mmad-anomalib-"))
        self.model = None
        self.engine: Engine | None = None
        self.watch = _Watch(None, None)

    def fit(self, train: list[Path], check_stop: Callable[[], None] | None = None,
            on_epoch: Callable[[int, int], None] | None = None) -> None:
        quiet_logs()
        spec = self.plan.spec
        epochs = self.plan.epochs or 1
        if spec.name == "EfficientAd" and epochs * len(train) < 2:  # its LR schedule divides by 0.95 x steps
            raise ConfigError(f"anomalib:EfficientAd needs at least 2 training steps (epochs x images), "
                              f"{self.label} gives {epochs * len(train)}")
        seed_everything(self.seed, verbose=False)
        self.model = build_model(self.plan, self.image_size, self.scratch)
        self.watch = _Watch(check_stop, on_epoch)
        validate = spec.name == "EfficientAd"  # its map quantiles come from validation on normal images
        self.engine = Engine(accelerator="gpu" if self.device.type == "cuda" else "cpu", devices=1, barebones=True,
                             max_epochs=epochs, default_root_dir=self.scratch, callbacks=[self.watch],
                             limit_val_batches=1.0 if validate else 0, check_val_every_n_epoch=epochs)
        data = NormalImages(train, self.image_size, spec.train_batch_size or self.batch_size, self.batch_size,
                            category=self.label, seed=self.seed)
        with self._engine_call():
            self.engine.fit(self.model, datamodule=data)

    def score(self, paths: list[Path], corrupt: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(raw image scores [B], anomaly maps [B, h, w] on the stride-8 grid) of one batch."""
        if self.engine is None:
            raise RuntimeError("fit() first")
        loader = image_loader(ImageList(paths, self.image_size, corrupt), len(paths))
        with self._engine_call():
            batches = self.engine.predict(self.model, dataloaders=[loader], return_predictions=True)
        scores, maps = [], []
        for batch in batches:
            anomaly = batch.anomaly_map
            anomaly = anomaly.reshape(len(batch), 1, *anomaly.shape[-2:]).float() if anomaly is not None else None
            score = batch.pred_score if batch.pred_score is not None else anomaly.amax(dim=(1, 2, 3))
            scores.append(score.reshape(-1).double().cpu())
            if anomaly is None:  # a model without maps: a one-cell map holding the score
                anomaly = score.reshape(-1, 1, 1, 1).float()
            grid = max(1, self.image_size // MAP_STRIDE)
            size = (min(grid, anomaly.shape[-2]), min(grid, anomaly.shape[-1]))
            maps.append(F.adaptive_avg_pool2d(anomaly, size)[:, 0].cpu())
        return torch.cat(scores).numpy(), torch.cat(maps).numpy()

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)

    @contextlib.contextmanager
    def _engine_call(self) -> Iterator[None]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        except SIGTERMException:  # Lightning's own SIGTERM exit: mmad's handler has asked for a stop too
            self.watch.check_stop()
            raise
        except SystemExit:  # Lightning exits on a KeyboardInterrupt (mmad's second signal): raise that instead
            if isinstance(self.watch.exception, KeyboardInterrupt):
                raise self.watch.exception from None
            raise
        except ValueError as exc:  # anomalib's checks of its settings against the data (sizes, batch sizes)
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise ConfigError(f"anomalib:{self.plan.spec.name} on {self.label}: {first}") from None
