"""What a training job asks the scheduler for: memory that follows the network and the data it caches.

A study with ``cache_windows`` (ablation) or ``cache_sequences`` (nlstm) keeps every clip it reads in memory
for the whole job: at eNTERFACE'05's size (~97k frames) and 112 pixels that is ~10 GB, far above a fixed
``mem_mb``. :func:`train_mem_mb` is the rules' ``mem_mb``, the sum of

* :data:`PROCESS_MB`: Python, torch, the network and its optimiser before the first step (measured 820-890 MB
  for every ablation and STC network at the paper's sizes, ``make paper-check``, docs/paper-scale.md);
* :func:`step_mb`: one training step's activations and gradients, the peak ``make paper-check`` measured on
  the CPU at the paper's sizes (:data:`MEASURED_STEP`) scaled by the batch, the pixels and the frames of the
  configured sizes (narrower demo networks take less: an upper bound). On a GPU these live on the device;
  the host then needs less than this asks;
* :func:`cache_mb`: the bytes the cache will hold, from the manifest's frame counts and the bytes per frame
  the preset's arrays take as the dataset class keeps them (:func:`ablation_bytes_per_clip`,
  :func:`nlstm_bytes_per_clip`), with :data:`CACHE_HEADROOM` for the allocator. A job never caches more
  clips than the manifest lists, so this is an upper bound too; without caching, nothing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from .config import preset_config, study_config

PROCESS_MB = 1500  # the process before its first step: measured 820-890 MB (paper sizes), with room for the loader
# One CPU training step's peak over the process (MB), measured by `make paper-check` at the paper's sizes (the
# largest network of the study), and the (batch, pixels, frames) it was measured at: docs/paper-scale.md.
MEASURED_STEP = {"ablation": (6516, 8, 112, 16),   # ablation_e: 2 ResNet + 2 Enhanced ConvLSTM streams
                 "nlstm": (2398, 16, 64, 18)}      # stc_nlstm
STEP_MARGIN = 1.1
MIN_STEP_MB = 100
CACHE_HEADROOM = 1.15  # allocator slack and per-clip bookkeeping over the arrays' bytes
MB = 2 ** 20
ALL_FIELDS = ("rgb", "flow", "dyn_rgb", "dyn_flow")
# fer_pipeline.preprocess stores faces as uint8, flow and dynamic images as float16; a dataset that resizes
# at load (fer_pipeline.windows.resize) keeps float32.
STORED_BYTES = {"rgb": 1, "flow": 2, "dyn_rgb": 2, "dyn_flow": 2}
RESIZED_BYTES = 4
CHANNELS = {"rgb": 3, "flow": 2, "dyn_rgb": 3, "dyn_flow": 2}


def window_count(n_frames: int, length: int, stride: int) -> int:
    """The windows of a clip of ``n_frames`` (fer_pipeline.motion.window_starts)."""
    if n_frames <= length:
        return 1
    starts = len(range(0, n_frames - length + 1, stride))
    return starts + ((n_frames - length) % stride != 0)


def ablation_bytes_per_clip(n_frames: int, preset: Mapping[str, Any], fields: Iterable[str],
                            input_size: int | None = None) -> int:
    """Bytes WindowDataset's cache holds for one clip: the ``fields`` it reads, at the preset's size in the
    stored dtypes, or at ``input_size`` in float32 when it resizes at load."""
    size = preset["size"]
    resized = input_size is not None and input_size != size
    side = input_size if resized else size
    rows = {"rgb": n_frames, "flow": max(0, n_frames - 1),
            "dyn_rgb": window_count(n_frames, preset["window"]["length"], preset["window"]["stride"])}
    rows["dyn_flow"] = rows["dyn_rgb"]
    return sum(rows[f] * side * side * CHANNELS[f] * (RESIZED_BYTES if resized else STORED_BYTES[f])
               for f in fields)


def nlstm_bytes_per_clip(n_frames: int, preset: Mapping[str, Any]) -> int:
    """Bytes NormalisedSequenceDataset's cache (fer_pipeline.frames.ClipRows) holds for one clip: its faces
    at the stored size, uint8 (resizing happens per item)."""
    return n_frames * preset["size"] * preset["size"] * 3


def variant_fields(variant: str, sizes: Mapping[str, Any]) -> tuple[str, ...]:
    """The batch fields an ablation variant reads (its network built on the meta device: no memory); all
    four when it cannot be built."""
    try:
        import torch

        from .models import build_model

        with torch.device("meta"):
            return tuple(build_model(variant, 2, **sizes).fields)
    except Exception:  # an unknown variant fails in its job with a clear message; ask for the most here
        return ALL_FIELDS


def cache_mb(config: Mapping[str, Any], dataset: str, study: str, manifest: pd.DataFrame,
             variant: str | None = None) -> int:
    """MB the study's cache holds when every clip of ``manifest`` is read (0 when the study does not cache)."""
    block = study_config(dict(config), dataset, study)
    preset = preset_config(dict(config), block["preset"])
    frames: Sequence[int] = [int(n) for n in manifest["n_frames"].fillna(0)]
    if study == "ablation":
        if not block.get("cache_windows", False):
            return 0
        fields = variant_fields(variant, block["sizes"]) if variant else ALL_FIELDS
        total = sum(ablation_bytes_per_clip(n, preset, fields, block["sizes"].get("input_size")) for n in frames)
    elif study == "nlstm":
        if not block.get("cache_sequences", False):
            return 0
        total = sum(nlstm_bytes_per_clip(n, preset) for n in frames)
    else:
        raise ValueError(f"no cache estimate for study '{study}' (ablation, nlstm)")
    return math.ceil(total * CACHE_HEADROOM / MB)


def step_mb(config: Mapping[str, Any], dataset: str, study: str) -> int:
    """MB one training step of the study adds, scaled from :data:`MEASURED_STEP` by the configured batch,
    input pixels and frames (window length, or sequence length)."""
    block = study_config(dict(config), dataset, study)
    measured, batch, pixels, frames = MEASURED_STEP[study]
    size = block["sizes"]["input_size"]
    if study == "ablation":
        length = preset_config(dict(config), block["preset"])["window"]["length"]
    else:
        length = block["sizes"]["sequence_length"]
    scale = block["training"]["batch_size"] / batch * (size / pixels) ** 2 * length / frames
    return max(MIN_STEP_MB, math.ceil(measured * scale * STEP_MARGIN))


def train_mem_mb(config: Mapping[str, Any], dataset: str, study: str, manifest_csv: str | Path,
                 variant: str | None = None) -> int:
    """A training job's ``mem_mb``: :data:`PROCESS_MB` + :func:`step_mb` + :func:`cache_mb` of the dataset's
    manifest (no cache term while the manifest does not exist yet, e.g. in a dry run before the manifest
    checkpoint)."""
    base = PROCESS_MB + step_mb(config, dataset, study)
    path = Path(manifest_csv)
    if not path.is_file():
        return base
    manifest = pd.read_csv(path, usecols=["clip_id", "n_frames"])
    return base + cache_mb(config, dataset, study, manifest, variant)
