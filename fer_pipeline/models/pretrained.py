"""Pretrained weights from a file named in config: VGG-Face, ImageNet, Sports-1M.

Nothing can be downloaded where this project runs, so weights are read from paths in config
(``studies.<study>.weights.<network>``). The file is a PyTorch state dict of this project's network (or one
converted once to its parameter names; each model's docstring names them), saved with ``torch.save``, bare
or under a ``state_dict`` or ``model`` key (as fer_pipeline.train saves ``best.pt``), or a public release as
downloaded: the VGG-Face PyTorch port, the C3D Sports-1M port, a torchvision ResNet state dict, whose names
fer_pipeline.models.converters maps to this project's. The classification head
(``model.head``) is loaded only when its shape fits: fine-tuning for another set of classes replaces it, as
Xu et al. "modify the last fully connected layer to suit our emotion recognition task". Any other missing,
unexpected or mis-shaped parameter is an error that names the config key and the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ..config import ConfigError

log = logging.getLogger(__name__)


def load_pretrained(model: nn.Module, path: str | Path, config_key: str) -> list[str]:
    """Load the weights at ``path`` into ``model``; return the names of parameters left as initialised (head
    parameters whose shapes did not fit, layers a public release lacks). Raises ConfigError naming ``config_key`` and the file when the file is
    missing or unreadable, or when its parameters do not fit the network (wrong sizes in config, or weights
    of another network)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{config_key} = '{path}': no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a state dict
        raise ConfigError(f"{config_key} = '{path}': not a PyTorch state dict ({exc})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ConfigError(f"{config_key} = '{path}': holds a {type(state).__name__}, not a state dict")

    from .converters import convert

    state, fresh = convert(model, state, str(path), config_key)  # a public release's names -> this project's
    own = model.state_dict()
    head = f"{model.head}."
    skipped = sorted(k for k in own if k.startswith(head) and k in state and state[k].shape != own[k].shape)
    # BatchNorm's batch counters are bookkeeping that converted weights often lack; ``fresh`` are layers the
    # release has no counterpart of (ResNet-10's fc1).
    missing = sorted(k for k in own if k not in state and not k.startswith(head)
                     and not k.endswith("num_batches_tracked") and k not in fresh)
    unexpected = sorted(k for k in state if k not in own)
    misshaped = [f"{k}: file {tuple(state[k].shape)}, network {tuple(own[k].shape)}"
                 for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape and k not in skipped]
    if missing or unexpected or misshaped:
        problems = [f"{label} {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
                    for label, names in (("missing:", missing), ("not in the network:", unexpected),
                                         ("other shapes:", misshaped)) if names]
        raise ConfigError(f"{config_key} = '{path}': the weights do not fit {type(model).__name__} as configured "
                          f"({'; '.join(problems)}); check the network's sizes in config (the paper's sizes for "
                          f"published weights) or convert the weights to this network's parameter names")
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    log.info("loaded %s from %s (%s); head re-initialised: %s; left as initialised: %s", type(model).__name__,
             path, config_key, skipped or "no", fresh or "none")
    return sorted(set(skipped) | set(fresh))
