"""The nlstm study's parts: STC-NLSTM's MSPP-norm and which layers feed which LSTM in each network, the
sequence normalisation and the x14 augmentation, the eye-box crop, the repeated subject folds, the masking of
unknown action units and the iteration schedule of the training loop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fer_pipeline import faces, protocols
from fer_pipeline.frames import augmentations, normalised_positions
from fer_pipeline.models import build_model
from fer_pipeline.models.stc_nlstm import MSPPNorm, mspp_dimension
from fer_pipeline.train import make_scheduler, masked_bce

SMALL = {"input_size": 32, "sequence_length": 6, "channels": 8, "lstm_hidden": 12}


def test_mspp_gives_5376_values_per_step_for_every_layer_size():
    """Table 2: every conv layer's 64 maps, 64x64 down to 8x8, become 64 x (64 + 16 + 4) = 5376 per step."""
    assert mspp_dimension(64) == 5376
    mspp = MSPPNorm((8, 4, 2))
    for side in (64, 32, 16, 8):
        f = torch.randn(2, 64, 18, side, side)
        out = mspp(f)
        assert out.shape == (2, 18, 5376)
    # The 2x2 grid's value of channel 0 at step 3 is the max over the top-left quarter of that step's map.
    f = torch.randn(1, 64, 18, 16, 16)
    out = mspp(f)
    offset = 64 * 64 + 64 * 16  # after the 8x8 and 4x4 grids of all channels
    assert out[0, 3, offset] == f[0, 0, 3, :8, :8].max()


def test_the_table2_network_at_the_papers_size_classifies_18_step_sequences():
    model = build_model("stc_nlstm", 6)
    batch = {"rgb": torch.rand(1, 18, 3, 64, 64)}
    assert model(batch).shape == (1, 6)
    convs = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv3d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == \
        [(3, 64, (3, 3, 3))] + [(64, 64, (3, 3, 3))] * 4
    outputs = model.backbone(batch["rgb"].transpose(1, 2))
    assert [tuple(o.shape[2:]) for o in outputs] == [(18, 64, 64), (18, 32, 32), (18, 16, 16), (18, 16, 16),
                                                     (18, 8, 8)]  # Table 2's input sizes: time is never pooled
    assert len(model.t_lstms) == 5


def _recorded_inputs(model, batch):
    """What each conv layer put out and what each LSTM / the classifier was given, in one forward pass."""
    seen = {"conv": [], "lstm": [], "t_lstm": {}, "classifier": []}
    hooks = [conv.register_forward_hook(lambda m, i, o: seen["conv"].append(o.detach().clone()))
             for conv in model.backbone.convs]
    hooks.append(model.classifier.register_forward_hook(lambda m, i, o: seen["classifier"].append(i[0].detach())))
    if hasattr(model, "lstm"):
        hooks.append(model.lstm.register_forward_hook(lambda m, i, o: seen["lstm"].append(i[0].detach())))
    for j, t_lstm in enumerate(getattr(model, "t_lstms", [])):
        hooks.append(t_lstm.register_forward_hook(lambda m, i, o, j=j: seen["t_lstm"].__setitem__(j, i[0].detach())))
    model.eval()
    with torch.no_grad():
        model(batch)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("variant", ["stc", "stc_lstm", "stc_slstm", "stc_nlstm"])
def test_each_network_reads_the_layers_the_paper_says(variant):
    """STC: the last conv layer into the classifier; STC-LSTM: the last layer into an LSTM; STC-SLSTM: the sum of
    every layer's MSPP into an LSTM; STC-NLSTM: layer j into T-LSTM j, for every layer."""
    torch.manual_seed(0)
    model = build_model(variant, 3, **SMALL)
    batch = {"rgb": torch.rand(2, 6, 3, 32, 32)}
    seen = _recorded_inputs(model, batch)
    mspp = [model.mspp(f) for f in seen["conv"]]
    assert len(mspp) == 5
    if variant == "stc":
        assert torch.equal(seen["classifier"][0], mspp[-1].flatten(1))
    elif variant == "stc_lstm":
        assert torch.equal(seen["lstm"][0], mspp[-1])
    elif variant == "stc_slstm":
        assert torch.allclose(seen["lstm"][0], torch.stack(mspp).sum(0))
    else:
        assert sorted(seen["t_lstm"]) == [0, 1, 2, 3, 4]
        for j in range(5):
            assert torch.equal(seen["t_lstm"][j], mspp[j])
    expected_layers = {"stc": [5], "stc_lstm": [5], "stc_slstm": [1, 2, 3, 4, 5], "stc_nlstm": [1, 2, 3, 4, 5]}
    assert model.layer_inputs == expected_layers[variant]


def test_the_c_lstm_reads_the_layers_in_the_configured_order():
    """shallow_first: the C-LSTM's steps are T-LSTM 1 .. 5; deep_first: 5 .. 1 (the outputs differ)."""
    batch = {"rgb": torch.rand(1, 6, 3, 32, 32)}
    outputs = {}
    for order in ("shallow_first", "deep_first"):
        torch.manual_seed(0)
        model = build_model("stc_nlstm", 3, **SMALL, clstm_order=order).eval()
        steps = []
        model.c_lstm.register_forward_hook(lambda m, i, o: steps.append(i[0]))
        h = []
        for t_lstm in model.t_lstms:
            t_lstm.register_forward_hook(lambda m, i, o: h.append(o))
        with torch.no_grad():
            outputs[order] = model(batch)
        expected = torch.stack(h if order == "shallow_first" else h[::-1], dim=1)
        assert torch.equal(steps[0], expected)
    assert not torch.allclose(outputs["shallow_first"], outputs["deep_first"])


def test_the_number_of_conv_layers_is_a_size():
    """Fig. 10 sweeps 1-7 conv layers: every count builds and STC-NLSTM gets a T-LSTM per layer."""
    for layers in (1, 3, 7):
        model = build_model("stc_nlstm", 4, **{**SMALL, "conv_layers": layers})
        assert len(model.t_lstms) == layers
        assert model({"rgb": torch.rand(1, 6, 3, 32, 32)}).shape == (1, 4)


def test_sequences_are_sampled_uniformly_when_longer_and_end_on_the_last_frame_repeated_when_shorter():
    longer = normalised_positions(40, 18)
    assert len(longer) == 18 and longer[0] == 0 and longer[-1] == 39
    assert np.all(np.diff(longer) >= 2) and np.ptp(np.diff(longer)) <= 1  # uniform: steps of 2 or 3
    assert normalised_positions(18, 18).tolist() == list(range(18))
    shorter = normalised_positions(7, 18)
    assert shorter.tolist() == list(range(7)) + [6] * 11


def test_the_augmentation_makes_14_copies():
    copies = augmentations(True, [2.5, 5.0, 7.5])
    assert len(copies) == 14 and len(set(copies)) == 14
    assert sorted({angle for _, angle in copies}) == [-7.5, -5.0, -2.5, 0.0, 2.5, 5.0, 7.5]
    assert (False, 0.0) in copies and (True, 0.0) in copies
    assert augmentations(False, []) == [(False, 0.0)]


def test_the_eye_box_keeps_the_eye_distance_and_pads_the_rectangle_with_zeros():
    """The same face at two scales gives the same 64 x 64 crop; the square's sides outside the eye box are 0."""
    rng = np.random.default_rng(0)
    face = rng.integers(30, 255, (120, 120, 3), dtype=np.uint8)
    small = np.zeros((300, 300, 3), np.uint8)
    small[60:180, 80:200] = face
    big = np.zeros((600, 600, 3), np.uint8)
    big[120:360, 160:400] = np.kron(face, np.ones((2, 2, 1), np.uint8))
    eyes_small = np.array([[120, 100], [160, 100], [140, 120], [125, 140], [155, 140]], float)
    eyes_big = eyes_small * 2 + 0.5  # the same points on the doubled image (pixel centres)
    crops = [faces.align(img[None], lm[None], "eye_box", 64)[0] for img, lm in ((small, eyes_small), (big, eyes_big))]
    assert np.abs(crops[0].astype(int) - crops[1].astype(int)).mean() < 12
    x0, y0, x1, y1 = faces.eye_box(eyes_small)
    assert np.isclose(x1 - x0, faces.EYE_BOX["width"] * 40)
    band = int(np.floor(64 * (1 - (x1 - x0) / (y1 - y0)) / 2))
    assert band >= 4
    assert crops[0][:, :band].max() == 0 and crops[0][:, 64 - band:].max() == 0
    assert crops[0][:, band + 1:64 - band - 1].min() > 0  # the face fills the rectangle


def _manifest(n_subjects: int, groups: int) -> pd.DataFrame:
    subjects = [f"S{i:03d}" for i in range(5, 5 + 5 * n_subjects, 5)]  # non-contiguous ids, as CK+
    rows = [{"clip_id": f"{s}_{k}", "subject": s, "label": "happiness"} for s in subjects for k in range(3)]
    manifest = pd.DataFrame(rows)
    manifest["fold"] = protocols.assign_folds(manifest, {"name": "kfold", "groups": groups}, seed=0)
    return manifest


def test_repeated_folds_are_subject_independent_and_each_repeat_deals_anew():
    """4 repeats of 10 folds: in every trial no subject is both trained (or validated) on and tested; in every
    repeat each subject is tested exactly once; the repeats are different partitions."""
    manifest = _manifest(25, 10)
    partitions = []
    for repeat in range(4):
        tested = []
        for fold in sorted(set(protocols.repeat_folds(manifest, repeat, seed=0))):
            split = protocols.fold_split(manifest, fold, 0.1, seed=0, repeat=repeat)
            assert not set(split["test"]) & (set(split["train"]) | set(split["val"]))
            assert not set(split["train"]) & set(split["val"])
            assert set(split["train"]) | set(split["val"]) | set(split["test"]) == set(manifest["subject"])
            tested += split["test"]
        assert sorted(tested) == sorted(set(manifest["subject"]))
        folds = protocols.repeat_folds(manifest, repeat, seed=0)
        assert (manifest.assign(f=folds).groupby("subject")["f"].nunique() == 1).all()
        partitions.append(frozenset(frozenset(manifest["subject"][folds == f]) for f in set(folds)))
    assert partitions[0] == frozenset(frozenset(manifest["subject"][manifest["fold"] == f]) for f in range(10))
    assert len(set(partitions)) == 4
    # The same seed gives the same repeats.
    assert protocols.repeat_folds(manifest, 2, seed=0).equals(protocols.repeat_folds(manifest, 2, seed=0))


def test_a_fixed_split_with_a_test_partition_validates_on_val_and_tests_test():
    manifest = pd.DataFrame({"clip_id": [f"c{i}" for i in range(6)], "subject": [""] * 6,
                             "split": ["train", "train", "val", "val", "test", "test"], "fold": [-1] * 6})
    split = protocols.fold_split(manifest, 0, 0.2, seed=0)
    assert split == {"train": ["c0", "c1"], "val": ["c2", "c3"], "test": ["c4", "c5"]}
    without_test = manifest[manifest["split"] != "test"]
    split = protocols.fold_split(without_test, 0, 0.5, seed=0)
    assert split["test"] == ["c2", "c3"] and len(split["val"]) == 1


def test_unknown_action_units_add_nothing_to_the_loss_or_its_gradient():
    """BP4D's 9 (unknown) is NaN: the masked loss equals the loss over the known labels alone, and the logits
    of unknown labels get no gradient (a loss that read them as absent would push them down)."""
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.3, 1.5, -2.0]], requires_grad=True)
    targets = torch.tensor([[1.0, float("nan"), 0.0], [float("nan"), 1.0, float("nan")]])
    loss = masked_bce(logits, targets)
    known = ~torch.isnan(targets)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[known], targets[known])
    assert torch.isfinite(loss) and torch.isclose(loss, expected)
    loss.backward()
    assert torch.all(logits.grad[~known] == 0) and torch.all(logits.grad[known] != 0)
    as_absent = torch.nn.functional.binary_cross_entropy_with_logits(logits.detach(), torch.nan_to_num(targets))
    assert not torch.isclose(loss.detach(), as_absent)


def test_the_step_schedule_counts_iterations():
    """STC-NLSTM: lr 0.0025 for 300 iterations, then 0.000025."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0025)
    scheduler, unit = make_scheduler(optimizer, {"schedule": {"name": "step", "milestones": [300], "gamma": 0.01,
                                                              "unit": "iteration"}}, epochs=3)
    assert unit == "iteration"
    rates = []
    for _ in range(500):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[299] == pytest.approx(0.0025) and rates[300] == pytest.approx(0.000025)
    assert rates[499] == pytest.approx(0.000025)
    with pytest.raises(ValueError, match="unknown"):
        make_scheduler(optimizer, {"schedule": {"name": "poly"}}, epochs=3)


def _bp4d_like(tmp_path):
    """A BP4D-like dataset of 4 subjects (2 train, 2 test) with one 12-frame clip each in a stc64 store: AU1
    present on the bright frames, AU2 unknown (9) on the first half, frames 0-1 outside the coded segment,
    frame 5 without a face."""
    from fer_pipeline import config as config_mod
    from fer_pipeline import lineage, paths, video
    from fer_pipeline.datasets import MANIFEST_COLUMNS
    from fer_pipeline.store import ArraySpec, ShardStore

    dataset, n = "tinybp4d", 12
    config = config_mod.deep_update(config_mod.load(), {
        "results": str(tmp_path / "results"),
        "datasets": {dataset: {"adapter": "bp4d", "root": str(tmp_path), "protocol": {"name": "fixed"},
                               "presets": ["stc64"], "studies": ["nlstm"], "study_overrides": {"nlstm": {
                                   "task": "action_units", "action_units": [1, 2], "val_fraction": 0.0,
                                   "augmentation": None, "variants": ["stc_lstm"],
                                   "sizes": {"input_size": 16, "sequence_length": 4, "channels": 4, "lstm_hidden": 6},
                                   "training": {"iterations": 3, "batch_size": 4}}}}}})
    rows, labels = [], []
    for i, (subject, split) in enumerate((("F001", "train"), ("F003", "train"), ("F002", "val"), ("M002", "val"))):
        folder = tmp_path / subject / "T1"
        folder.mkdir(parents=True)
        (folder / "0001.jpg").write_bytes(subject.encode())
        rows.append({"clip_id": f"{subject}_T1", "dataset": dataset, "subject": subject, "label": "happiness",
                     "raw_label": "T1", "split": split, "path": str(folder), "n_frames": n, "fps": 25.0, "width": 64,
                     "height": 64, "fold": -1, "shard": f"subject{subject}", "sha256": video.sha256(folder / "0001.jpg")})
        bright = np.arange(n) % 3 == 0
        au1 = np.where(bright, 1.0, 0.0)
        au1[:2] = np.nan
        au2 = np.where(np.arange(n) < n // 2, np.nan, 1.0 - bright)
        au2[:2] = np.nan
        labels.append(pd.DataFrame({"clip_id": f"{subject}_T1", "frame": np.arange(100, 100 + n), "AU1": au1, "AU2": au2}))
    manifest = pd.DataFrame(rows)[MANIFEST_COLUMNS]
    manifest_csv = paths.manifest_csv(config["results"], dataset)
    manifest_csv.parent.mkdir(parents=True)
    manifest.to_csv(manifest_csv, index=False)
    frame_labels = pd.concat(labels, ignore_index=True)
    frame_labels.to_csv(paths.manifest_companion_csv(config["results"], dataset, "frame_labels"), index=False)
    expected = lineage.expected(config, manifest, "stc64").set_index("clip_id")
    for row in manifest.itertuples():
        e = expected.loc[row.clip_id]
        rgb = np.where((np.arange(n) % 3 == 0)[:, None, None, None], 220, 30).astype(np.uint8) * np.ones((1, 16, 16, 3), np.uint8)
        valid = np.ones(n, bool)
        valid[5] = False
        with ShardStore(paths.features_store(config["results"], dataset, "stc64", row.shard), attrs={"stage": "features"}) as store:
            store.write_clip(row.clip_id, {"rgb": ArraySpec(rgb, ("frame", "y", "x", "channel"), 16),
                                           "valid": ArraySpec(valid, ("frame",))},
                             {"source_sha256": e.source_sha256, "track_sha256": e.track_sha256,
                              "features_sha256": e.features_sha256, "label": row.label, "subject": row.subject,
                              "n_frames": n, "n_windows": 0})
    return config, dataset, manifest, manifest_csv, frame_labels


def test_action_unit_sequences_end_on_coded_face_frames_with_unknowns_as_nan(tmp_path):
    from fer_pipeline.frames import ActionUnitSequenceDataset
    from fer_pipeline.windows import index_clips

    config, dataset, manifest, _, frame_labels = _bp4d_like(tmp_path)
    clips = index_clips(config, dataset, "stc64", manifest)
    data = ActionUnitSequenceDataset(clips, frame_labels, ["AU1", "AU2"], length=4, size=16)
    # Per clip: 12 frames, frame 5 has no face, frames 0-1 are uncoded: 9 coded face frames.
    assert len(data) == 4 * 9
    frames = {data.frame_number(i) for i in range(9)}
    assert frames == {100 + k for k in range(2, 12) if k != 5}
    for i in range(len(data)):
        item = data[i]
        number = data.frame_number(i)
        row = frame_labels[(frame_labels["clip_id"] == clips["clip_id"].iloc[int(item["clip"])])
                           & (frame_labels["frame"] == number)]
        expected = row[["AU1", "AU2"]].to_numpy(np.float32)[0]
        assert np.array_equal(item["label"].numpy(), expected, equal_nan=True)
        assert item["rgb"].shape == (4, 3, 16, 16)
        # The last step is the labelled frame itself: bright exactly where AU1 is present.
        assert (item["rgb"][-1].mean() > 0.5) == (expected[0] == 1)
    with pytest.raises(ValueError, match="rows of frame labels"):
        ActionUnitSequenceDataset(clips, frame_labels[frame_labels["frame"] != 111], ["AU1"], 4, 16)


def test_the_bp4d_task_trains_with_the_masked_loss_and_scores_f1_per_unit(tmp_path):
    from fer_pipeline.studies import nlstm

    config, dataset, manifest, manifest_csv, _ = _bp4d_like(tmp_path)
    run = tmp_path / "run"
    summary = nlstm.run_trial(config, dataset, "stc_lstm", 0, 0, manifest_csv, run)
    assert summary["split"]["test"] == ["F002", "M002"] and summary["classes"] == ["AU1", "AU2"]
    predictions = pd.read_csv(run / "predictions.csv", dtype={"subject": str})
    assert set(predictions["subject"]) == {"F002", "M002"} and len(predictions) == 2 * 9  # every coded test frame
    assert predictions["label_AU2"].isna().sum() == 2 * 3  # frames 2-4 of each clip: AU2 unknown
    assert np.isfinite(pd.read_csv(run / "metrics.csv")["train_loss"]).all()
    table = nlstm.write_table(config, dataset, [run], tmp_path / "nlstm.csv")
    assert table.columns[:4].tolist() == ["variant", "description", "f1_mean", "f1_std"]
    assert {"f1_AU1", "f1_AU2", "paper_f1"} <= set(table.columns)
    assert 0 <= table["f1_mean"].iloc[0] <= 1 and (tmp_path / "nlstm" / "au_f1.png").is_file()


def test_the_layer_sweep_adds_stc_nlstm_rows_with_their_layer_count():
    from fer_pipeline.config import ConfigError
    from fer_pipeline.studies import nlstm

    study = {"variants": ["stc", "stc_nlstm"], "layer_sweep": [1, 5, 7], "sizes": {"conv_layers": 5}}
    assert nlstm.variants(study) == ["stc", "stc_nlstm", "stc_nlstm_l1", "stc_nlstm_l7"]
    assert nlstm.variant_model(study, "stc_nlstm_l7") == ("stc_nlstm", {"conv_layers": 7})
    assert nlstm.variant_model(study, "stc") == ("stc", {"conv_layers": 5})
    with pytest.raises(ConfigError, match="stc_nlstm_l3"):
        nlstm.variant_model(study, "stc_nlstm_l3")
