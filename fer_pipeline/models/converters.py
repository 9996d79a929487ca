"""Pretrained weights as people have them: the public releases' parameter names mapped to this project's.

:func:`fer_pipeline.models.pretrained.load_pretrained` calls :func:`convert` on every file it reads, so a
config path (``studies.fusion.weights.*``) may name the release as downloaded:

=========================  ==============================================  ====================================
network (this project)     release and its names                            what changes
=========================  ==============================================  ====================================
VGGFace (vgg_face.py)      the PyTorch port of VGG-Face (e.g.               ``conv{b}_{i}`` -> ``features.<n>``
                           ``vgg_face_dag.pth``, converted from Parkhi et     (the n-th layer of VGG-16's
                           al.'s MatConvNet model): ``conv1_1.weight`` ...    features); ``fc6``-``fc8`` kept;
                           ``conv5_3.bias``, ``fc6`` ... ``fc8`` (2622)       a conv-shaped fc6 is flattened
C3D (c3d.py)               the PyTorch port of C3D on Sports-1M (e.g.        ``conv1`` ... ``conv5b`` ->
                           ``c3d.pickle``): ``conv1``, ``conv2``,            ``blocks.<name>.0``; ``fc6``-``fc8``
                           ``conv3a``, ``conv3b``, ... ``conv5b``,           kept
                           ``fc6``, ``fc7``, ``fc8`` (487)
ResNet10 (resnet10.py)     torchvision's ResNet state dict (``conv1``,       names kept; torchvision's ``fc``
                           ``bn1``, ``layer1.0.conv1``, ...                  (the ImageNet classifier) dropped;
                           ``layer4.0.downsample.1``, ``fc``) of a            ``fc1`` and the head stay as
                           ResNet with one basic block per stage              initialised (Xu et al. add fc1)
EfficientNetB0 (frafer.py; timm's ``efficientnet_b0`` state dict (e.g.             ``conv_stem``, ``bn1`` ->
FRA-FER's FER network),    HSEmotion's AffectNet-trained B0):                 ``features.0.{0,1}``; ``blocks.s.b``
and TorchvisionFR with     ``conv_stem``, ``bn1``, ``blocks.<stage>.           -> ``features.<s+1>.<b>.block``
efficientnet_b0 (its FR    <block>.conv_dw / bn1 / se.conv_reduce /           (stage 0's depthwise-separable
network)                   se.conv_expand / conv_pw / bn2`` (stage 0) or      block: ``0.0, 0.1, 1.fc1, 1.fc2,
                           ``.conv_pw / bn1 / conv_dw / bn2 / se.* /          2.0, 2.1``; the inverted residuals:
                           conv_pwl / bn3`` (stages 1-6), ``conv_head``,      ``0.0 ... 3.1``); ``conv_head``,
                           ``bn2``, ``classifier`` (HSEmotion:                ``bn2`` -> ``features.8.{0,1}``;
                           ``classifier.0``, or none)                         ``classifier`` -> ``classifier.1``
=========================  ==============================================  ====================================

A ``module.`` prefix (a model saved from ``nn.DataParallel``) is removed first. Each release's keys are
checked whole: a key the release must have and the file lacks, a key the network has no place for (e.g.
``layer1.1.conv1.weight`` of a ResNet-18, which has two blocks per stage), or a shape that does not fit
stops with a :class:`~fer_pipeline.config.ConfigError` naming the config key, the file, the release and the
keys. The classification head (``fc8``, ``fc``) of another set of classes is left to ``load_pretrained``,
which re-initialises it.

Channel order and input scale are the ports' own: the VGG-Face port takes RGB in 0..255 less its mean
(129.186, 104.762, 93.594), as :class:`~fer_pipeline.models.vgg_face.VGGFace` does; torchvision's ResNets
RGB with ImageNet's mean and std, as :class:`~fer_pipeline.models.resnet10.ResNet10`; the C3D port RGB in
0..255 (this project's C3D also subtracts the Sports-1M mean colour). A file converted straight from a
Caffe model (BGR inputs) needs its first convolution's input channels reversed: :func:`reverse_input_channels`.
timm's ``efficientnet_b0`` computes what torchvision's does (symmetric padding, batch-norm eps 1e-5, SiLU,
ImageNet normalisation), so its weights give the same outputs; its TensorFlow ports (``tf_efficientnet_b0``,
HSEmotion's models) have the same names but "same" padding and eps 1e-3: they load, as a starting point whose
activations differ slightly. HSEmotion ships whole pickled models (``torch.save(model)``): save their
``state_dict()`` once to read them here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import nn

from ..config import ConfigError

log = logging.getLogger(__name__)

BOOKKEEPING = ("num_batches_tracked",)  # BatchNorm counters: releases often lack them


@dataclass(frozen=True)
class Release:
    """A public release of a network's weights: how to recognise it and how its names map to ours."""

    name: str
    networks: tuple[str, ...]  # the class names of this project's networks it fits
    marker: str  # a key the release has ...
    absent: str  # ... and one it lacks, which this project's names have
    names: Callable[[nn.Module], dict[str, str]]  # the network -> {release key: this project's key}
    dropped: Callable[[str], bool] = lambda key: False  # release keys with no counterpart, not loaded
    fresh: Callable[[str], bool] = lambda key: False  # this project's keys the release has none of


def _vgg_face_names(model: nn.Module) -> dict[str, str]:
    if any(isinstance(m, nn.BatchNorm2d) for m in model.features):
        raise ValueError("VGG-Face has no batch normalisation: set sizes.batch_norm false to load it")
    names, block, conv = {}, 1, 0
    for index, layer in enumerate(model.features):
        if isinstance(layer, nn.MaxPool2d):
            block, conv = block + 1, 0
        elif isinstance(layer, nn.Conv2d):
            conv += 1
            for p in ("weight", "bias"):
                names[f"conv{block}_{conv}.{p}"] = f"features.{index}.{p}"
    for fc in ("fc6", "fc7", "fc8"):
        for p in ("weight", "bias"):
            names[f"{fc}.{p}"] = f"{fc}.{p}"
    return names


def _c3d_names(model: nn.Module) -> dict[str, str]:
    if any(isinstance(m, nn.BatchNorm3d) for m in model.modules()):
        raise ValueError("C3D has no batch normalisation: set sizes.batch_norm false to load it")
    names = {f"{block}.{p}": f"blocks.{block}.0.{p}" for block in model.blocks for p in ("weight", "bias")}
    names.update({f"{fc}.{p}": f"{fc}.{p}" for fc in ("fc6", "fc7", "fc8") for p in ("weight", "bias")})
    return names


def _torchvision_resnet_names(model: nn.Module) -> dict[str, str]:
    return {key: key for key in model.state_dict() if not key.startswith(("fc1.", "fc."))}


# timm's names of an EfficientNet block's layers -> torchvision's within its ``block`` (timm's
# _efficientnet_blocks): a block without expansion is timm's DepthwiseSeparableConv, the others InvertedResidual.
TIMM_DEPTHWISE_SEPARABLE = (("conv_dw", "0.0"), ("bn1", "0.1"), ("se.conv_reduce", "1.fc1"),
                            ("se.conv_expand", "1.fc2"), ("conv_pw", "2.0"), ("bn2", "2.1"))
TIMM_INVERTED_RESIDUAL = (("conv_pw", "0.0"), ("bn1", "0.1"), ("conv_dw", "1.0"), ("bn2", "1.1"),
                          ("se.conv_reduce", "2.fc1"), ("se.conv_expand", "2.fc2"), ("conv_pwl", "3.0"), ("bn3", "3.1"))


def _timm_efficientnet_names(model: nn.Module) -> dict[str, str]:
    from torchvision.models.efficientnet import MBConv

    features = model.features
    stages = list(features)[1:-1]
    if not stages or not all(isinstance(stage, nn.Sequential) and all(isinstance(block, MBConv) for block in stage)
                             for stage in stages):
        raise ValueError("a timm EfficientNet state dict fits torchvision's EfficientNet-B0 (its `features` of MBConv "
                         f"stages); this {type(model).__name__} has other stages")
    layers = [("conv_stem", "features.0.0"), ("bn1", "features.0.1")]
    for s, stage in enumerate(stages):
        for b, block in enumerate(stage):
            parts = TIMM_DEPTHWISE_SEPARABLE if len(block.block) == 3 else TIMM_INVERTED_RESIDUAL
            layers += [(f"blocks.{s}.{b}.{timm}", f"features.{s + 1}.{b}.block.{ours}") for timm, ours in parts]
    layers += [("conv_head", f"features.{len(features) - 1}.0"), ("bn2", f"features.{len(features) - 1}.1")]
    own = list(model.state_dict())
    names = {f"{timm}{key[len(ours):]}": key for timm, ours in layers for key in own if key.startswith(f"{ours}.")}
    for p in ("weight", "bias"):  # timm's classifier, or HSEmotion's nn.Sequential(nn.Linear(1280, classes))
        names[f"classifier.{p}"] = names[f"classifier.0.{p}"] = f"classifier.1.{p}"
    return names


RELEASES = (
    Release("the VGG-Face PyTorch port (conv1_1 ... conv5_3, fc6 ... fc8)", ("VGGFace",), "conv1_1.weight",
            "features.0.weight", _vgg_face_names),
    Release("the C3D Sports-1M PyTorch port (conv1, conv2, conv3a ... conv5b, fc6 ... fc8)", ("C3D",), "conv3a.weight",
            "blocks.conv1.0.weight", _c3d_names),
    Release("a torchvision ResNet state dict (conv1, bn1, layer1.0 ... layer4.0, fc)", ("ResNet10",),
            "layer1.0.conv1.weight", "fc1.weight", _torchvision_resnet_names,
            dropped=lambda key: key.startswith("fc."),  # ImageNet's 1000 classes, read from the pooled features
            fresh=lambda key: key.startswith(("fc1.", "fc."))),
    Release("a timm efficientnet_b0 state dict (conv_stem, bn1, blocks.<stage>.<block>, conv_head, bn2, classifier)",
            ("EfficientNetB0", "TorchvisionFR"), "conv_stem.weight", "features.0.0.weight", _timm_efficientnet_names),
)


def _listed(keys: list[str], limit: int = 6) -> str:
    return ", ".join(keys[:limit]) + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """``state`` without ``prefix`` when every key has it (a model saved from ``nn.DataParallel``)."""
    if state and all(key.startswith(prefix) for key in state):
        return {key[len(prefix):]: value for key, value in state.items()}
    return dict(state)


def release_of(model: nn.Module, state: Mapping[str, torch.Tensor]) -> Release | None:
    """The release whose names ``state`` has, for ``model``'s class; None for this project's names."""
    for release in RELEASES:
        if type(model).__name__ in release.networks and release.marker in state and release.absent not in state:
            return release
    return None


def convert(model: nn.Module, state: Mapping[str, torch.Tensor], path: str, config_key: str
            ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``state`` in ``model``'s parameter names, and the network's keys the release has nothing for (left as
    initialised, e.g. ResNet-10's new fc1). A state dict in this project's names comes back as it is.
    Raises ConfigError naming ``config_key``, ``path``, the release and the offending keys."""
    state = strip_prefix(state)
    release = release_of(model, state)
    if release is None:
        return state, []
    where = f"{config_key} = '{path}' ({release.name})"
    try:
        names = release.names(model)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    own = model.state_dict()
    head = f"{getattr(model, 'head', '')}."
    missing = sorted(k for k, ours in names.items() if k not in state and not ours.startswith(head)
                     and not k.endswith(BOOKKEEPING))
    unexpected = sorted(k for k in state if k not in names and not release.dropped(k))
    converted, misshaped = {}, []
    for key, ours in names.items():
        if key not in state:
            continue
        value = state[key]
        if value.ndim > 2 and own[ours].ndim == 2:  # a fully connected layer kept as a convolution
            value = value.reshape(value.shape[0], -1)
        if value.shape != own[ours].shape and not ours.startswith(head):
            misshaped.append(f"{key}: file {tuple(value.shape)}, network {tuple(own[ours].shape)}")
        converted[ours] = value
    if missing or unexpected or misshaped:
        problems = [f"{label} {_listed(keys)}" for label, keys in
                    (("missing:", missing), ("no place in the network:", unexpected), ("other shapes:", misshaped))
                    if keys]
        raise ConfigError(f"{where}: the weights do not fit {type(model).__name__} as configured "
                          f"({'; '.join(problems)}); check the network's sizes in config (the paper's sizes for "
                          f"published weights) and that the file is this release")
    fresh = sorted(k for k in own if release.fresh(k) and not k.endswith(BOOKKEEPING))
    log.info("%s: converted %d tensors of %s; left as initialised: %s", config_key, len(converted), release.name,
             fresh or "none")
    return converted, fresh


def reverse_input_channels(state: Mapping[str, torch.Tensor], key: str) -> dict[str, torch.Tensor]:
    """``state`` with the input channels of ``key`` (the first convolution's weight) reversed: BGR <-> RGB,
    for a file converted straight from a Caffe model that read BGR frames."""
    out = dict(state)
    out[key] = state[key].flip(1)
    return out
