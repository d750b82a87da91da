"""How fast the commands that need no model answer: the start-up a user waits for.

Each command runs as the user runs it (`python cli.py ...` in a fresh process), `--repeats`
times; the median wall time is reported, with whether the process imported torch or
TransformerLens (it should not: these commands read configs and files only). The target is
0.5 s on the 2-core development machine.

    python benchmarks/startup.py --out benchmarks/results     # results/startup.md and .json

A bundled demo run is made first (in a temporary directory) so that render, export, compare,
evaluate and report have a run to read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 0.5
PROBE = ("import runpy, sys; sys.argv = ['circuit', *sys.argv[1:]]; "
         "exit_code = 0\n"
         "try:\n    runpy.run_path({cli!r}, run_name='__main__')\n"
         "except SystemExit as e:\n    exit_code = e.code or 0\n"
         "heavy = [m for m in ('torch', 'transformer_lens', 'transformers') if m in sys.modules]\n"
         "print('HEAVY=' + ','.join(heavy), file=sys.stderr)")


def commands(run: Path, work: Path) -> list[tuple[str, list[str]]]:
    circuit = str(run / "circuit.json")
    return [
        ("--help", ["--help"]),
        ("--version", ["--version"]),
        ("tasks", ["tasks"]),
        ("metrics", ["metrics"]),
        ("methods", ["methods"]),
        ("graph on a config", ["graph", "--model", str(ROOT / "models" / "ioi")]),
        ("render (DOT)", ["render", circuit, "-f", "dot", "--out", str(work / "r.dot")]),
        ("export (CSV)", ["export", str(run), "-f", "csv", "--out", str(work / "e.csv")]),
        ("export (MIB)", ["export", str(run), "-f", "mib", "--out", str(work / "e.mib.json")]),
        ("compare two files", ["compare", str(run), str(run), "--out", str(work / "cmp"),
                               "--no-render"]),
        ("a usage error", ["discover", "--bogus"]),
        ("discover with a bad --out", ["discover", "--task", "demo", "--out", "/dev/null"]),
        ("evaluate with a bad --out", ["evaluate", str(run), "--out", "/dev/null"]),
        ("report with a bad --out", ["report", str(run), "--out", "/dev/null"]),
    ]


def time_command(args: list[str], repeats: int, work: Path) -> dict:
    times, heavy = [], ""
    for _ in range(repeats):
        for leftover in ("r.dot", "e.csv", "e.mib.json"):
            (work / leftover).unlink(missing_ok=True)
        subprocess.run(["rm", "-rf", str(work / "cmp")], check=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", PROBE.format(cli=str(ROOT / "cli.py")),
                               *args], capture_output=True, text=True, cwd=work)
        times.append(time.perf_counter() - start)
        heavy = next((line[6:] for line in done.stderr.splitlines()
                      if line.startswith("HEAVY=")), "?")
    return {"median_s": statistics.median(times), "times_s": times, "heavy_imports": heavy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="write startup.md and .json here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        run = work / "run"
        subprocess.run([sys.executable, str(ROOT / "cli.py"), "discover", "--task", "demo",
                        "--out", str(run), "--quiet", "--no-render"], check=True,
                       capture_output=True)
        rows = []
        for name, command in commands(run, work):
            row = {"command": name, "args": command,
                   **time_command(command, args.repeats, work)}
            rows.append(row)
            print(f"{row['median_s']:.3f} s  {name}  (imports: {row['heavy_imports'] or '-'})")
    lines = [f"Start-up of the commands that need no model (`python benchmarks/startup.py`, "
             f"median of {args.repeats} fresh processes each; target {TARGET_S} s):", "",
             "| command | median | heavy imports |", "|---|---|---|"]
    lines += [f"| {r['command']} | {r['median_s']:.2f} s | {r['heavy_imports'] or 'none'} |"
              for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "startup.md").write_text(text)
        (args.out / "startup.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
