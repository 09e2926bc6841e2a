"""Retrained models as timm models: `import nas.models` registers the timm entry point "nas_model".

    import timm
    import nas.models  # noqa: F401  (registers "nas_model")
    model = timm.create_model("nas_model", checkpoint="runs/quickstart/retrain/model.pt").eval()

The checkpoint is read with the safe loader (tensors and plain containers only). The model carries a timm
`pretrained_cfg` (input size, classes, mean/std 0.5: inputs scaled to [-1, 1]), so
`timm.data.resolve_model_data_config(model)` gives its preprocessing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from timm.models import register_model
from torch import nn

from nas.arch import Arch
from nas.data import MEAN, STD
from nas.errors import NasError, first_line
from nas.runs import load_checkpoint
from supernet.network import build

# What `nas retrain` writes (checkpoint.pt, model.pt); the version is raised when a resumed run could not follow
# the interrupted one's path from an older checkpoint
CHECKPOINT_KIND = "nas-model"
CHECKPOINT_VERSION = 3  # 3: augmentation drawn per image by the loader

TIMM_NAME = "nas_model"
RETRAINED_HINT = "pass a retrained model (model.pt or checkpoint.pt from `nas retrain`)"


def read_checkpoint(path: str | Path) -> tuple[nn.Module, Arch]:
    """The model of a retrained checkpoint, weights loaded, in eval mode, with its timm data config
    (`pretrained_cfg`), and its Arch; NasError for any other file."""
    path = Path(path)
    payload = load_checkpoint(path, CHECKPOINT_KIND, hint=RETRAINED_HINT)
    if "arch" not in payload or "model" not in payload:
        raise NasError(f"{path}: a {CHECKPOINT_KIND} checkpoint without arch and weights; {RETRAINED_HINT}")
    arch = Arch.from_dict(payload["arch"], str(path))
    model = build(arch)
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, TypeError, AttributeError) as error:
        first = first_line(error)
        raise NasError(f"{path}: its weights do not fit its arch ({first}); {RETRAINED_HINT}") from None
    model.pretrained_cfg = data_config(arch, payload.get("crop_pct", 1.0))
    return model.eval(), arch


def data_config(arch: Arch, crop_pct: float = 1.0) -> dict[str, Any]:
    """A timm pretrained_cfg for a model of `arch`: nas resizes images (bilinear), keeps the centre `crop_pct` (the
    whole image of an in-memory set, 0.875 of image files) at the arch's resolution and scales it to [-1, 1]."""
    return {"architecture": TIMM_NAME, "input_size": (arch.in_channels, arch.resolution, arch.resolution),
            "fixed_input_size": True, "interpolation": "bilinear", "crop_pct": crop_pct, "crop_mode": "center",
            "mean": (MEAN,) * arch.in_channels, "std": (STD,) * arch.in_channels, "num_classes": arch.num_classes}


@register_model
def nas_model(pretrained: bool = False, checkpoint: str | Path | None = None, pretrained_cfg: Any = None,
              pretrained_cfg_overlay: dict[str, Any] | None = None, cache_dir: Any = None,
              **kwargs: Any) -> nn.Module:
    """timm entry point: `timm.create_model("nas_model", checkpoint=PATH)`, a retrained model with its weights.

    The weights always come from `checkpoint` (so `pretrained`, `pretrained_cfg` and `cache_dir` do not apply);
    `pretrained_cfg_overlay` updates the data config. `num_classes` and `in_chans` may be given only as the
    checkpoint has them. Like every timm model it is returned in training mode: call `.eval()` for inference.
    """
    if checkpoint is None:
        raise NasError(f"{TIMM_NAME}: pass checkpoint=PATH (not checkpoint_path); {RETRAINED_HINT}")
    model, arch = read_checkpoint(checkpoint)
    fixed = {"num_classes": arch.num_classes, "in_chans": arch.in_channels}
    for key, value in kwargs.items():
        if key not in fixed:
            raise NasError(f"{TIMM_NAME}: option {key}={value!r} is not supported; the checkpoint fixes the network")
        if value != fixed[key]:
            raise NasError(f"{TIMM_NAME}: {key}={value!r}, but {checkpoint} has {key}={fixed[key]}")
    cfg = {**model.pretrained_cfg, **(pretrained_cfg_overlay or {})}
    model.pretrained_cfg = cfg
    model.default_cfg = cfg
    return model.train()
