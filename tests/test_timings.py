"""fer-pipeline timings: the workflow's benchmark files summed per rule, slowest first, with totals."""

import pytest

from fer_pipeline import cli
from fer_pipeline.timings import read_benchmarks, report, summarise

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _write(path, wall, cpu, rss):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{wall}\t0:00:00\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n")


@pytest.fixture
def results(tmp_path):
    bench = tmp_path / "results" / "benchmarks" / "demo"
    _write(bench / "train_ablation" / "fold0.tsv", 30.0, 25.0, 900)
    _write(bench / "train_ablation" / "fold1.tsv", 50.0, 40.0, 950)
    _write(bench / "detect_faces" / "subject01.tsv", 8.5, 7.0, 600)
    _write(bench / "extract_features" / "ec112" / "subject01.tsv", 12.0, 11.0, 400)
    # A job that ran twice: its last run counts; snakemake writes "-" for what it could not measure.
    (bench / "fusion_svm").mkdir()
    (bench / "fusion_svm" / "fold0.tsv").write_text(HEADER + "99\t0\t1\t1\t1\t1\t0\t0\t50\t1\n"
                                                    + "2.5\t0\t-\t1\t1\t1\t0\t0\t50\t2.0\n")
    (tmp_path / "results" / "demo").mkdir()
    return tmp_path / "results" / "demo"


def test_rules_are_summed_slowest_first_with_totals(results):
    jobs = read_benchmarks(results.parent / "benchmarks" / "demo")
    table = summarise(jobs)
    assert list(table["rule"]) == ["train_ablation", "extract_features/ec112", "detect_faces", "fusion_svm"]
    ablation = table.iloc[0]
    assert ablation["jobs"] == 2 and ablation["wall_s"] == 80.0 and ablation["slowest_job_s"] == 50.0
    assert ablation["cpu_s"] == 65.0 and ablation["max_rss_mb"] == 950
    assert table["share"].sum() == pytest.approx(1.0)
    assert table.set_index("rule").at["fusion_svm", "wall_s"] == 2.5  # the last run of the job
    text = report(results)
    lines = text.splitlines()
    assert "5 jobs of 4 rules" in lines[0]
    assert lines[3].startswith("| train_ablation | 2 | 80.0 | 77.7 % | 50.0 | 65.0 | 950 |")
    assert lines[-1] == "| total | 5 | 103.0 | 100 % | 50.0 | 85.0 | 950 |"


def test_the_cli_prints_it_and_a_missing_folder_says_so(results, tmp_path, capsys):
    cli.main(["timings", str(results)])
    assert "| train_ablation |" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="no benchmarks folder"):
        report(tmp_path / "nowhere" / "demo")
