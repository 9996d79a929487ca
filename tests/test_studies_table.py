"""results/{dataset}/studies.csv: every study that ran on a dataset side by side (fer_pipeline.report), its
command, its rule and its place in report.html and the default target."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from fer_pipeline import cli
from fer_pipeline import config as config_mod
from fer_pipeline.report import STUDIES_CSV, studies_table, write_html

REPO = Path(__file__).resolve().parent.parent


def _write_tables(folder: Path) -> list[Path]:
    """Three studies' tables and per-run tables in the layout their write_table functions give."""
    folder.mkdir(parents=True, exist_ok=True)
    ablation = pd.DataFrame({
        "variant": ["ablation_a", "ablation_c", "ablation_e"], "description": ["(a)", "(c)", "(e)"],
        "window_accuracy_mean": [90.0, 10.0, 10.0],  # the window level is not what ranks the variants
        "video_accuracy_mean": [40.0, 55.0, 55.0], "video_accuracy_std": [1.0, 2.0, 3.0],
        "video_macro_recall_mean": [41.0, 56.0, 57.0], "video_macro_recall_std": [1.5, 2.5, 3.5],
        "video_macro_f1_mean": [39.0, 54.0, 53.0], "video_macro_f1_std": [1.2, 2.2, 3.2], "runs": [4, 4, 4],
        "paper_accuracy": [33.70, 44.28, 45.29]})
    ablation.to_csv(folder / "ablation.csv", index=False)
    runs = [{"variant": v, "fold": f, "seed": s, "level": level, "accuracy": 50.0}
            for v in ablation["variant"] for f in (0, 1) for s in (0, 1) for level in ("window", "video")]
    pd.DataFrame(runs).to_csv(folder / "ablation_folds.csv", index=False)
    fusion = pd.DataFrame({
        "method": ["aggregation", "c3d", "fusion"], "row": ["feature aggregation", "C3D", "fusion"],
        "video_accuracy_mean": [60.0, 70.0, 65.0], "video_accuracy_std": [5.0, 6.0, 7.0],
        "video_macro_recall_mean": [60.0, 70.0, 64.0], "video_macro_recall_std": [5.0, 6.0, 7.5],
        "video_macro_f1_mean": [58.0, 68.0, 62.0], "video_macro_f1_std": [5.0, 6.0, 8.0], "runs": [2, 2, 2],
        "paper_accuracy": [40.15, 41.53, 48.01], "notes": ["", "", "weighted sum"]})
    fusion.to_csv(folder / "fusion.csv", index=False)
    pd.DataFrame([{"method": m, "fold": f, "seed": 0, "level": "video", "accuracy": 1.0}
                  for m in fusion["method"] for f in (0, 1)]).to_csv(folder / "fusion_folds.csv", index=False)
    nlstm = pd.DataFrame({"variant": ["stc", "stc_nlstm"], "description": ["STC", "STC-NLSTM"],
                          "accuracy_mean": [80.0, 85.0], "accuracy_std": [4.0, 3.0],
                          "macro_recall_mean": [79.0, 84.0], "macro_recall_std": [4.0, 3.0],
                          "macro_f1_mean": [78.0, 83.0], "macro_f1_std": [4.0, 3.0], "trials": [6, 6],
                          "paper_accuracy": [98.9, 99.8]})
    nlstm.to_csv(folder / "nlstm.csv", index=False)
    pd.DataFrame([{"variant": v, "repeat": r, "fold": f, "seed": 0, "accuracy": 1.0}
                  for v in nlstm["variant"] for r in (0, 1) for f in (0, 1, 2)]).to_csv(folder / "nlstm_folds.csv",
                                                                                       index=False)
    return [folder / f"{s}.csv" for s in ("ablation", "fusion", "nlstm")]


def test_each_study_is_its_best_row_with_folds_and_seeds(tmp_path):
    cfg = config_mod.load()
    tables = _write_tables(tmp_path / "demo")
    table = studies_table(cfg, "demo", tables, tmp_path / "demo" / STUDIES_CSV).set_index("study")
    # ablation: the best video accuracy (ties: the table's order), not the best window accuracy
    assert table.loc["ablation", "row"] == "ablation_c" and table.loc["ablation", "accuracy_mean"] == 55.0
    assert (table.loc["ablation", "macro_recall_mean"], table.loc["ablation", "macro_f1_std"]) == (56.0, 2.2)
    assert (table.loc["ablation", "folds"], table.loc["ablation", "seeds"], table.loc["ablation", "runs"]) == \
        (2, "0 1", 4)
    # fusion: the fused row, even where a single row is more accurate
    assert table.loc["fusion", "row"] == "fusion" and table.loc["fusion", "accuracy_mean"] == 65.0
    assert table.loc["fusion", "paper_accuracy"] == 48.01 and table.loc["fusion", "folds"] == 2
    # nlstm: the best network over its trials (repeat x fold)
    assert table.loc["nlstm", "row"] == "stc_nlstm" and table.loc["nlstm", "folds"] == 6
    assert table.loc["nlstm", "protocol"] == "losgo, 5 groups, repeated 4 times"  # the dataset's, and the repeats
    assert "best video accuracy of 3 variants" == table.loc["ablation", "chosen"]
    on_disk = pd.read_csv(tmp_path / "demo" / STUDIES_CSV)
    assert list(on_disk["study"]) == ["ablation", "fusion", "nlstm"]


def test_the_command_and_the_report_section(tmp_path, capsys):
    tables = _write_tables(tmp_path / "demo")
    out = tmp_path / "demo" / STUDIES_CSV
    assert cli.main(["studies-table", "--dataset", "demo", "--out", str(out), *map(str, tables)]) == 0
    assert "stc_nlstm" in capsys.readouterr().out
    page = write_html("demo", tmp_path / "demo", tmp_path / "demo" / "report.html").read_text()
    assert page.index("every study side by side") < page.index("<h2>ablation</h2>")
    assert page.count("<h2>studies</h2>") == 0  # shown once, first


def test_a_fusion_table_without_its_fused_row_says_so(tmp_path):
    tables = _write_tables(tmp_path / "demo")
    fusion = pd.read_csv(tables[1])
    fusion[fusion["method"] != "fusion"].to_csv(tables[1], index=False)
    with pytest.raises(ValueError, match="fusion.csv has no 'fusion' row"):
        studies_table(config_mod.load(), "demo", tables, tmp_path / "out.csv")


def test_the_rule_and_the_default_target():
    report_rules = (REPO / "workflow/rules/report.smk").read_text()
    assert "rule studies_table:" in report_rules and "fer-pipeline studies-table" in report_rules
    common = (REPO / "workflow/rules/common.smk").read_text()
    assert "fer_report.studies_csv(RESULTS, name), paths.report_html(RESULTS, name)" in common
