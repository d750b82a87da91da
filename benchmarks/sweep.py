"""Benchmark of `circuit sweep`: one sweep of k thresholds against k separate `circuit discover`
commands, on the bundled tasks.

Run from the repository root (writes `OUT/sweep.json` and `OUT/sweep.md`):

    python benchmarks/sweep.py --out benchmarks/results

For each bundled task whose model is present, and each threshold of the grid (default the
13-point `1e-4:1e-1:13`), the script times, as a user would type them, each in a fresh process:

- `circuit discover --task T --threshold t --out DIR/discover/tau-t --quiet` for every t (the
  k separate runs: each loads Python, torch and the model, tokenises, records the clean and
  corrupted runs, searches and writes its files);
- `circuit sweep --task T --thresholds GRID --out DIR/sweep --quiet` (one process: loads once,
  records once, then per threshold a copy of the recordings, the search, the files, and the
  evaluation of the circuit for every metric, which the separate runs do not do).

The ratio is the sweep's wall time over the sum of the separate runs' wall times. "edge tests
if shared" counts what a sweep that searched every threshold side by side could save: one test
per distinct history of decisions at each step. "same decisions" checks that every threshold's
decision log is byte for byte the separate run's. Separate runs and sweeps alternate task by
task, so that a change in the machine's load affects both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from acdc.core.tasks.reading import list_tasks  # noqa: E402
from acdc.sweeps.grid import parse_grid, run_dir_name  # noqa: E402

CIRCUIT = [sys.executable, "-c", "import cli; cli.main()"]


def circuit(*args: str) -> float:
    """Run `circuit ARGS` in a fresh process; its wall time."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]).rstrip(os.pathsep)}
    start = time.perf_counter()
    result = subprocess.run([*CIRCUIT, *args], cwd=ROOT, env=env, capture_output=True,
                            text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"circuit {' '.join(args)} failed ({result.returncode}):\n"
                         f"{result.stderr}")
    return seconds


def bench_task(name: str, grid: str, work: Path, jobs: int) -> dict:
    thresholds = parse_grid(grid).thresholds
    discover_dir, sweep_dir = work / name / "discover", work / name / "sweep"
    separate = []
    for threshold in thresholds:
        separate.append(circuit("discover", "--task", name, "--threshold", repr(threshold),
                                "--out", str(discover_dir / run_dir_name(threshold)),
                                "--quiet"))
    swept = circuit("sweep", "--task", name, "--thresholds", grid, "--out", str(sweep_dir),
                    "--quiet", "--jobs", str(jobs))
    same = all((sweep_dir / run_dir_name(t) / "decisions.jsonl").read_bytes() ==
               (discover_dir / run_dir_name(t) / "decisions.jsonl").read_bytes()
               for t in thresholds)
    record = json.loads((sweep_dir / "sweep.json").read_text())
    tests, shared_tests = shared_edge_tests([sweep_dir / run_dir_name(t) for t in thresholds])
    return {"task": name, "grid": grid, "thresholds": len(thresholds), "jobs": jobs,
            "separate_s": separate, "separate_total_s": sum(separate),
            "sweep_s": swept, "ratio": swept / sum(separate), "same_decisions": same,
            "edges_kept": [r["n_edges_kept"] for r in record["runs"]],
            "n_edges_total": record["n_edges_total"],
            "search_s": sum(r["runtime_s"] for r in record["runs"]),
            "edge_tests": tests, "edge_tests_shared": shared_tests}


def shared_edge_tests(run_dirs: list[Path]) -> tuple[int, int]:
    """The edge tests of the thresholds' searches, and how many would remain if the searches
    ran side by side and shared every test they make in the same state: thresholds share a
    search until their first different decision (the state then differs), so at each step a
    test is needed once per distinct history of decisions (from each decisions.jsonl)."""
    runs = []
    for run_dir in run_dirs:
        lines = [json.loads(line) for line in
                 (run_dir / "decisions.jsonl").read_text().splitlines()[1:]]
        runs.append([(line["edge"], line["kept"]) for line in lines if "edge" in line])
    shared = 0
    for step in range(max(len(run) for run in runs)):
        shared += len({(tuple(run[:step]), run[step][0]) for run in runs if step < len(run)})
    return sum(len(run) for run in runs), shared


def markdown(report: dict) -> str:
    lines = [f"Benchmark: `python benchmarks/sweep.py --out benchmarks/results` "
             f"({report['machine']}, {report['cpus']} CPUs, {report['date']})", "",
             "| task | grid | thresholds | edges kept (largest to smallest tau) | separate "
             "`discover` runs (sum) | one `sweep` | sweep / separate | searches alone | "
             "edge tests if shared | same decisions |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["tasks"]:
        kept = row["edges_kept"]
        lines.append(
            f"| {row['task']} | `{row['grid']}` | {row['thresholds']} | {kept[-1]} to "
            f"{kept[0]} of {row['n_edges_total']} | {row['separate_total_s']:.1f} s "
            f"({min(row['separate_s']):.1f}-{max(row['separate_s']):.1f} s each) | "
            f"{row['sweep_s']:.1f} s | {row['ratio']:.2f} | {row['search_s']:.1f} s | "
            f"{row['edge_tests_shared']} of {row['edge_tests']} | "
            f"{'yes' if row['same_decisions'] else 'NO'} |")
    lines += ["", "Edge tests if shared: the searches' edge tests if the thresholds ran side by "
              "side and shared each test made in the same state (a threshold's state departs from "
              "the others' at its first different decision), against the tests the separate "
              "searches make (from the runs' decision logs)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--grid", default="1e-4:1e-1:13", help="thresholds of every sweep")
    parser.add_argument("--tasks", default="", help="comma-separated task names (default: all "
                                                   "bundled tasks with a model)")
    parser.add_argument("--jobs", type=int, default=1, help="the sweep's --jobs")
    args = parser.parse_args()
    names = [n for n in args.tasks.split(",") if n] or [
        spec.name for spec in list_tasks() if spec.model and Path(spec.model).is_dir()]
    report = {"machine": platform.machine(), "cpus": os.cpu_count(),
              "date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
              "tasks": []}
    work = Path(tempfile.mkdtemp(prefix="circuit-sweep-bench-"))
    try:
        for name in names:
            report["tasks"].append(bench_task(name, args.grid, work, args.jobs))
            row = report["tasks"][-1]
            print(f"{name}: sweep {row['sweep_s']:.1f} s, separate {row['separate_total_s']:.1f} "
                  f"s, ratio {row['ratio']:.2f}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    (args.out / "sweep.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
