"""``fer-pipeline inspect``: what a feature store holds, clip by clip, and a contact sheet to look at.

A stills store (fer_pipeline.stills: arrays of many images, one table row per image) is summarised by its
arrays, its labels and box sources (``--clip`` names one image: its table row); its contact sheet tiles a few
crops of every label."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import zarr

from .files import save_figure
from .motion import flow_to_rgb
from .stills import contact_sheet as stills_contact_sheet
from .stills import is_stills_store
from .stills import summarize_store as summarize_stills
from .store import ShardStore, StoreError, clip_footprint, read_field, shard_stores


def layout_of(path: str | Path) -> tuple[Path, str, str | None]:
    """(results root, dataset, preset or None) of a folder of the results layout (fer_pipeline.paths): a
    preset's feature folder, the detections folder, one store in either, or a dataset's folder."""
    path = Path(path).resolve()
    if path.suffix == ".zarr":
        path = path.parent
    if path.parent.name == "features":
        return path.parents[2], path.parents[1].name, path.name
    if path.name == "detections":
        return path.parents[1], path.parent.name, None
    return path.parent, path.name, None


def stale_lines(config: dict, dataset: str, manifest_csv: Path, preset: str | None, whole_dataset: bool) -> list[str]:
    """What readers will not use, held against the manifest and config: stale clips and stores, and the
    command that removes them."""
    from . import lineage
    from .datasets import read_manifest

    if not manifest_csv.is_file():
        return [f"stale: not checked ({manifest_csv} is missing)"]
    manifest = read_manifest(manifest_csv)
    reports = lineage.audits(config, dataset, manifest) if whole_dataset else [lineage.audit(config, dataset, manifest, preset)]
    lines = []
    for report in reports:
        lines.append(f"{report.folder}: {len(report.current)} current clips, {len(report.stale_clips)} stale clips, "
                     f"{len(report.stale_stores)} stale stores, {len(report.missing)} manifest clips without one")
        lines += [f"  stale store {p}" for p in report.stale_stores]
        lines += [f"  stale clip {p.name}/{clip_id}: {why}" for p, clip_id, why in report.stale_clips]
    if whole_dataset:
        lines += [f"  stale preset folder {p}" for p in lineage.stale_preset_dirs(config, dataset)]
    if any(r.stale_clips or r.stale_stores for r in reports):
        lines.append(f"readers ignore them; `fer-pipeline gc {Path(config['results']) / dataset}` removes them")
    return lines


def _stores(path: Path) -> list[ShardStore]:
    if (path / "zarr.json").is_file() and ((path / "clips").is_dir() or is_stills_store(path)):
        return [ShardStore(path, mode="r")]
    stores = shard_stores(path)
    if not stores:
        # A dataset folder: every preset (and the detections) below it.
        stores = [ShardStore(p, mode="r") for p in sorted(path.rglob("*.zarr")) if (p / "zarr.json").is_file()]
    if not stores:
        raise StoreError(f"{path}: holds no feature store (*.zarr)")
    return stores


def _codec_name(codec) -> str:
    """A compressor's short name, with blosc's inner compressor (``blosc(zstd)``)."""
    name = type(codec).__name__.replace("Codec", "").lower()
    inner = getattr(codec, "cname", None)
    return f"{name}({getattr(inner, 'value', inner)})" if inner is not None else name


def _array_line(name: str, array: zarr.Array) -> str:
    codecs = ",".join(_codec_name(c) for c in array.compressors) or "none"
    stored = array.nbytes_stored()
    ratio = array.nbytes / stored if stored else float("nan")
    dims = ",".join(array.metadata.dimension_names or ())
    sharded = f" shards={array.shards}" if array.shards else ""
    scale = array.attrs.get("scale")
    quantised = f" scale={scale}" if scale is not None else ""
    return (f"    {name:<12} {str(array.shape):<22} {str(array.dtype):<8} ({dims}) chunks={array.chunks}{sharded} "
            f"{codecs}{quantised} {array.nbytes / 1e6:.2f} MB -> {stored / 1e6:.2f} MB ({ratio:.1f}x)")


def _inline_line(name: str, record: dict) -> str:
    return (f"    {name:<12} {str(tuple(record['shape'])):<22} {record['dtype']:<8} ({','.join(record['dims'])}) "
            f"inline (in the clip's zarr.json)")


def footprint_line(clips: int, frames: int, size: int, files: int, what: str = "clip") -> str:
    """The store's cost on a shared filesystem: bytes per frame and files per clip (or per image)."""
    if not clips:
        return "footprint: no complete clip"
    per_frame = f"{size / frames / 1e3:.1f} KB per frame" if frames else "no frames"
    return (f"footprint: {size / 1e6:.1f} MB on disk in {files} files: {per_frame}, "
            f"{files / clips:.{2 if files < clips else 1}f} files per {what}")


def summarize(path: str | Path, clip_id: str | None = None) -> str:
    """A text summary: stores, clips, shapes, dtypes, codecs, bytes and provenance."""
    path = Path(path)
    lines = []
    total_clips, total_frames, total_bytes = 0, 0, 0
    disk_bytes, disk_files, stills_images, stills_files = 0, 0, 0, 0
    for store in _stores(path):
        if is_stills_store(store.path):
            found_lines, images, stored = summarize_stills(store.path, clip_id)
            lines += found_lines
            total_clips, total_frames, total_bytes = total_clips + images, total_frames + images, total_bytes + stored
            stills_images += images
            stills_files += sum(len(names) for _, _, names in os.walk(store.path))
            continue
        attrs = dict(store.root.attrs)
        ids = store.clip_ids()
        lines.append(f"{store.path}  stage={attrs.get('stage')} dataset={attrs.get('dataset')} "
                     f"shard={attrs.get('shard')} preset={attrs.get('preset', '-')} clips={len(ids)}")
        code = attrs.get("code", {})
        lines.append(f"  code: {code.get('package')} {code.get('version')} commit={code.get('git_commit')}"
                     f"{' (modified)' if code.get('git_dirty') else ''}")
        for cid in ids:
            if clip_id and cid != clip_id:
                continue
            group = store.clip(cid)
            cattrs = dict(group.attrs)
            total_clips += 1
            total_frames += int(cattrs.get("n_frames", 0))
            lines.append(f"  clip {cid}: subject={cattrs.get('subject')} label={cattrs.get('label')} "
                         f"frames={cattrs.get('n_frames')} fps={cattrs.get('fps')} "
                         f"windows={cattrs.get('n_windows', '-')} valid={cattrs.get('valid_fraction', '-')}")
            if clip_id:
                lines.append("    provenance: " + json.dumps({k: cattrs[k] for k in (
                    "source", "track_sha256", "features_sha256", "media", "warnings", "created") if k in cattrs},
                    sort_keys=True))
                lines.append("    parameters: " + json.dumps(cattrs.get("parameters"), sort_keys=True))
            size, files = clip_footprint(store.path, cid)
            disk_bytes, disk_files = disk_bytes + size, disk_files + files
            for name, array in sorted(group.arrays()):
                total_bytes += array.nbytes_stored()
                if clip_id:
                    lines.append(_array_line(name, array))
            if clip_id:
                lines += [_inline_line(name, record) for name, record in sorted(cattrs.get("inline", {}).items())]
                lines.append(f"    on disk: {size / 1e3:.1f} KB in {files} files "
                             f"({size / max(1, int(cattrs.get('n_frames', 0))) / 1e3:.1f} KB per frame)")
    if clip_id and total_clips == 0:
        raise StoreError(f"{path}: no complete clip '{clip_id}'")
    lines.append(f"total: {total_clips} clips, {total_frames} frames, {total_bytes / 1e6:.1f} MB stored")
    video_clips, video_frames = total_clips - stills_images, total_frames - stills_images
    if video_clips or not stills_images:
        lines.append(footprint_line(video_clips, video_frames, disk_bytes, disk_files))
    if stills_images:
        stills_bytes = sum(os.path.getsize(os.path.join(r, n)) for store in _stores(path) if is_stills_store(store.path)
                           for r, _, names in os.walk(store.path) for n in names)
        lines.append(footprint_line(stills_images, stills_images, stills_bytes, stills_files, "image"))
    return "\n".join(lines)


def _tile(images: list[np.ndarray], columns: int) -> np.ndarray:
    height, width = images[0].shape[:2]
    rows = -(-len(images) // columns)
    sheet = np.full((rows * height, columns * width, 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        sheet[r * height:(r + 1) * height, c * width:(c + 1) * width] = image
    return sheet


def _normalise(image: np.ndarray) -> np.ndarray:
    """A dynamic image stretched to 0..255 for display (its values are signed sums)."""
    image = image.astype(np.float32)
    lo, hi = np.percentile(image, 1), np.percentile(image, 99)
    return np.clip((image - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)


def contact_sheet(path: str | Path, clip_id: str, out_png: str | Path, columns: int = 8) -> Path:
    """A PNG of one clip: aligned faces (row 1), flow in HSV colour (row 2), dynamic images (row 3; rows 2
    and 3 for a preset with motion)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stores = _stores(Path(path))
    if stores and all(is_stills_store(store.path) for store in stores):
        return stills_contact_sheet([store.path for store in stores], out_png, clip_id, columns)
    for store in stores:
        if clip_id in store.clip_ids():
            group = store.clip(clip_id)
            break
    else:
        raise StoreError(f"{path}: no complete clip '{clip_id}'")
    if "rgb" not in group:
        raise StoreError(f"{path}: clip '{clip_id}' is a detection record; point inspect at a feature store")
    rgb = group["rgb"][...]
    picks = np.linspace(0, len(rgb) - 1, columns).round().astype(int)
    rows = [("aligned faces", _tile([rgb[i] for i in picks], columns))]
    if "flow" in group:  # a preset without motion (stc64) stores the aligned faces only
        flow = read_field(group, "flow")  # dequantised, as every reader sees it
        flow_picks = np.minimum(picks, len(flow) - 1)
        max_mag = float(np.percentile(np.linalg.norm(flow, axis=-1), 99.5)) or 1.0
        dyn = [_normalise(d) for d in read_field(group, "dyn_rgb")] + \
              [flow_to_rgb(d, float(np.abs(d).max()) or 1.0) for d in read_field(group, "dyn_flow")]
        rows += [("optical flow (hue = direction)", _tile([flow_to_rgb(flow[i], max_mag) for i in flow_picks], columns)),
                 ("dynamic images: RGB windows, then flow windows", _tile(dyn[: 2 * columns], columns))]
    attrs = dict(group.attrs)
    fig, axes = plt.subplots(len(rows), 1, figsize=(columns * 1.4, 4.8 * len(rows) / 2.2), squeeze=False)
    for ax, (title, image) in zip(axes[:, 0], rows):
        ax.imshow(image)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{clip_id}: {attrs.get('label')} (subject {attrs.get('subject')}), "
                 f"{attrs.get('n_frames')} frames, frames shown {picks.tolist()}", fontsize=10)
    return save_figure(fig, out_png)
