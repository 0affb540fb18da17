"""Pretrained weights for anomalib's models from local files only: the bundled EfficientNet-Lite0
(renamed to timm's `tf_efficientnet_lite0`) or a user's `--weights FILE`.

anomalib builds its feature extractors with timm, which would fetch weights from the Hugging
Face hub. mmad builds every model with downloads switched off (`no_downloads`) and then loads
the weights into the modules that take them, checking that every tensor is there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from mmad.errors import ConfigError

from .backbone import STAGES, load_state, packaged_weights

# efficientnet_pytorch names (the bundled file) -> timm's, per module.
_STEM_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_EXPANDING = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
              "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DEPTHWISE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def _block_positions() -> list[tuple[int, int, bool]]:
    """(stage, index in stage, expands) of each of efficientnet_pytorch's flat `_blocks`."""
    return [(stage, j, expand != 1) for stage, (_, _, expand, _, _, repeats) in enumerate(STAGES)
            for j in range(repeats)]


def lite0_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The bundled EfficientNet-Lite0 state dict in timm's `tf_efficientnet_lite0` naming."""
    blocks = _block_positions()
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            stage, j, expands = blocks[int(parts[1])]
            module = (_EXPANDING if expands else _DEPTHWISE)[parts[2]]
            renamed[".".join(("blocks", str(stage), str(j), module, *parts[3:]))] = value
        else:
            renamed[".".join((_STEM_HEAD[parts[0]], *parts[1:]))] = value
    return renamed


def read_weights(path: Path | None, backbone: str | None) -> dict[str, torch.Tensor]:
    """A state dict for `backbone` (mmad's name; None: a model's own pretrained part), from `path`
    or, for Lite0 without one, the bundled file. Lite0 files in efficientnet_pytorch naming are renamed."""
    if path is None:
        if backbone != "efficientnet_lite0":
            raise ConfigError(f"no weights are bundled for {backbone}; pass --weights FILE")
        path = packaged_weights()
    state = load_state(Path(path))
    if any(key.startswith("_conv_stem.") for key in state):
        try:
            state = lite0_to_timm(state)
        except (KeyError, IndexError, ValueError):
            raise ConfigError(f"{path}: not an EfficientNet-Lite0 state dict (unexpected tensor names)") from None
    return state


def load_into(module: nn.Module, state: dict[str, torch.Tensor], path: Path | str, what: str) -> None:
    """Every tensor of `module` from `state` (extra tensors, such as a classifier the feature
    extractor drops, are ignored); a missing or misshapen one is one line."""
    own = module.state_dict()
    missing = [key for key in own if key not in state]
    if missing:
        raise ConfigError(f"{path}: weights do not fit {what}: {len(missing)} of its {len(own)} tensors are missing "
                          f"(first: {missing[0]})")
    wrong = [key for key, value in own.items() if tuple(state[key].shape) != tuple(value.shape)]
    if wrong:
        raise ConfigError(f"{path}: weights do not fit {what}: {wrong[0]} is {tuple(state[wrong[0]].shape)}, "
                          f"expected {tuple(own[wrong[0]].shape)}")
    module.load_state_dict({key: state[key] for key in own}, strict=True)


def submodule(root: nn.Module, dotted: str) -> nn.Module:
    for name in dotted.split("."):
        root = getattr(root, name)
    return root


@contextlib.contextmanager
def no_downloads() -> Iterator[None]:
    """While anomalib builds a model, timm builds every network without pretrained weights, so
    nothing is fetched from the hub; mmad loads the weights itself afterwards."""
    import timm
    original = timm.create_model

    def create_model(name, *args, **kwargs):
        if args:  # pretrained given by position
            args = (False, *args[1:])
        else:
            kwargs["pretrained"] = False
        return original(name, *args, **kwargs)

    timm.create_model = create_model
    try:
        yield
    finally:
        timm.create_model = original
