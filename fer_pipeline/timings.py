"""``fer-pipeline timings results/<dataset>``: where a workflow run's time went, from its ``benchmark:`` files.

Every rule of the workflow records a benchmark (snakemake's ``benchmark:`` directive) at
``<results>/benchmarks/<dataset>/<rule>/<job>.tsv`` (fer_pipeline.paths.benchmark_file): one row per run of
the job with ``s`` (wall seconds), ``cpu_time`` (CPU seconds, user + system), ``max_rss`` (MB) and more.
This module sums them per rule, slowest first, with the totals. Job seconds add up across jobs that ran in
parallel, so the total is the work done, not the run's elapsed time (that is at most the total divided by
``--cores``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

COLUMNS = ("s", "cpu_time", "max_rss")


def benchmark_dir(path: str | Path) -> Path:
    """The benchmarks folder of a dataset's results folder (``results/demo`` -> ``results/benchmarks/demo``),
    or ``path`` itself when it is a benchmarks folder."""
    path = Path(path)
    if path.parent.name == "benchmarks" or path.name == "benchmarks":
        return path
    return path.parent / "benchmarks" / path.name


def read_benchmarks(folder: str | Path) -> pd.DataFrame:
    """One row per benchmark file below ``folder``: rule (its folder below ``folder``, e.g. ``train_ablation`` or
    ``extract_features/ec112``; the file's stem for a file directly in ``folder``), job, wall s, cpu_time s and max_rss MB (the last run's row when a job ran more than once;
    snakemake's ``-`` for a value it could not measure reads as missing)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no benchmarks folder (the workflow writes one per dataset as its rules run)")
    rows = []
    for tsv in sorted(folder.rglob("*.tsv")):
        table = pd.read_csv(tsv, sep="\t", na_values=["-", "NA"])
        missing = [c for c in COLUMNS if c not in table.columns]
        if table.empty or missing:
            raise ValueError(f"{tsv}: not a snakemake benchmark file (no rows, or no column {', '.join(missing)})")
        last = table.iloc[-1]
        parent = tsv.parent.relative_to(folder)  # extract_features/ec112: the rule and its preset
        rule = parent.as_posix() if parent.parts else tsv.stem
        rows.append({"rule": rule, "job": tsv.stem, "wall_s": float(last["s"]),
                     "cpu_s": float(last["cpu_time"]), "max_rss_mb": float(last["max_rss"])})
    if not rows:
        raise FileNotFoundError(f"{folder}: holds no benchmark file (*.tsv)")
    return pd.DataFrame(rows)


def summarise(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule: jobs, wall s (sum, and the slowest job), CPU s, share of the wall time, peak RSS; slowest first."""
    table = jobs.groupby("rule").agg(jobs=("job", "size"), wall_s=("wall_s", "sum"), slowest_job_s=("wall_s", "max"),
                                     cpu_s=("cpu_s", "sum"), max_rss_mb=("max_rss_mb", "max")).reset_index()
    table["share"] = table["wall_s"] / max(table["wall_s"].sum(), 1e-9)
    return table.sort_values(["wall_s", "rule"], ascending=[False, True], ignore_index=True)


def report(path: str | Path) -> str:
    """The text ``fer-pipeline timings`` prints: one line per rule, slowest first, then the totals."""
    folder = benchmark_dir(path)
    jobs = read_benchmarks(folder)
    table = summarise(jobs)
    lines = [f"{folder}: {len(jobs)} jobs of {len(table)} rules (job seconds: parallel jobs add up)",
             "| rule | jobs | wall s | share | slowest job s | cpu s | max RSS MB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in table.itertuples():
        lines.append(f"| {row.rule} | {row.jobs} | {row.wall_s:.1f} | {100 * row.share:.1f} % | {row.slowest_job_s:.1f} | "
                     f"{row.cpu_s:.1f} | {row.max_rss_mb:.0f} |")
    lines.append(f"| total | {len(jobs)} | {jobs['wall_s'].sum():.1f} | 100 % | {jobs['wall_s'].max():.1f} | "
                 f"{jobs['cpu_s'].sum():.1f} | {jobs['max_rss_mb'].max():.0f} |")
    return "\n".join(lines)
