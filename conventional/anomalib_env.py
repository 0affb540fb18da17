"""Importing anomalib the way a CLI run needs it: importable beside the CPU torch, quiet, offline.

torchvision: PyPI's Linux torchvision wheel is built against CUDA torch. Beside the CPU-only
torch this project pins (`torch==2.13.0`, the local CPU build) its `_C` extension cannot load,
which torchvision tolerates — except that its import registers fake kernels for
`torchvision::nms` and `torchvision::qnms`, and that raises "operator torchvision::nms does not
exist". anomalib's image models use none of torchvision's C++ operators (those are detection
ops: NMS, RoI pooling), only its pure-torch transforms. So, only when the extension cannot load,
the two operator schemas are declared (without kernels: calling them still raises) and the
import succeeds. Where torch and torchvision match, nothing is done.

Memory: anomalib's PatchCore coreset allocates an n x d temporary per greedy step between small
long-lived tensors; glibc's heap, whose mmap threshold grows after the first large frees, then
keeps each step's block (the 10-image demo fit peaked at 5.3 GiB resident, 30 images were killed
for memory). Fixing the threshold at 4 MiB (mallopt, glibc only) gives every large block back to
the system when freed: the same fit peaks at 0.8 GiB.

Quiet: Lightning and anomalib log banners and warnings, and PatchCore's coreset and EfficientAd
draw tqdm bars, on stderr; mmad's CLI prints one line per subset, so their loggers are raised to
ERROR and the anomalib modules' `tqdm` is one that is disabled (torch imports tqdm first, so its
TQDM_DISABLE variable would come too late).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import logging
import sys
import types
import warnings
from pathlib import Path

import torch

from mmad.errors import ConfigError

_declared: list = []  # the Library object must outlive the call, or the schemas go away
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 4 * 2**20
QUIET_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning",
                 "anomalib")


def ensure_torchvision_importable() -> None:
    """Call before anything imports torchvision (anomalib, timm)."""
    if "torchvision" in sys.modules or _declared:
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return  # not installed: the import itself will say so
    folder = Path(next(iter(spec.submodule_search_locations)))
    extensions = sorted(folder.glob("_C*.so")) + sorted(folder.glob("_C*.pyd"))
    if not extensions:
        return
    try:
        torch.ops.load_library(str(extensions[0]))
        return
    except (OSError, RuntimeError):
        pass  # built against another torch (CUDA): declare what torchvision's import needs
    library = torch.library.Library("torchvision", "DEF")
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    _declared.append(library)


def bound_heap_growth() -> None:
    """Blocks of MMAP_THRESHOLD bytes or more are mapped and unmapped, not kept in the heap (glibc)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator is not the one that fragments this way


def quiet_logs() -> None:
    """Lightning's and anomalib's loggers to ERROR (again before each run: a package imported
    later may have reset them, or re-pointed Lightning's rank-zero logger elsewhere)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    rank_zero = sys.modules.get("lightning_utilities.core.rank_zero")
    if rank_zero is not None:
        rank_zero.log.setLevel(logging.ERROR)
    _silence_tqdm()


def _silence_tqdm() -> None:
    """anomalib modules that draw tqdm bars (`from tqdm import tqdm` or `import tqdm`) get a disabled one."""
    import tqdm
    quiet = functools.partial(tqdm.tqdm, disable=True)
    for name, module in list(sys.modules.items()):
        if not name.startswith("anomalib.") or module is None:
            continue
        found = getattr(module, "tqdm", None)
        if found is tqdm.tqdm:
            module.tqdm = quiet
        elif found is tqdm:
            module.tqdm = types.SimpleNamespace(tqdm=quiet)


def import_anomalib():
    """The anomalib package, imported once (its deprecation warnings silenced); one line when the
    extra is not installed."""
    if "anomalib.models" in sys.modules:
        return sys.modules["anomalib"]
    if importlib.util.find_spec("anomalib") is None:
        raise ConfigError("anomalib models need the extra: pip install 'mmad[anomalib]'")
    ensure_torchvision_importable()
    bound_heap_growth()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import anomalib
        import anomalib.models  # noqa: F401
    quiet_logs()
    return anomalib
