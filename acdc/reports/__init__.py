"""`circuit report`: one self-contained HTML page about a run or a sweep.

The page needs nothing but itself: its style, script and data are inline, every drawing is
inline SVG, and a Content-Security-Policy lets nothing else run or load. It shows, in order:

1. a summary: the circuit's title (`acdc.exports.dot.circuit_title`), edges and nodes kept, the
   run's metric;
2. the circuit drawing, with edge widths by |score| unless turned off; for a circuit at
   positions (the grid of `acdc.exports.dot`) a table of what each position group keeps, for a
   node circuit (HISP, subnetwork probing) its heads and MLPs with their scores;
3. the metrics table from `evaluation.json` beside the circuit (`circuit evaluate`; for a MIB
   file, `<file>.evaluation.json`), and its faithfulness curve; without it the page says so
   and gives the command that makes it;
4. for a sweep: a row per threshold (from `sweep.json`, else from the runs' circuits), the
   sweep's plot, and every edge's rank score (`acdc.evaluation.rank_scores`);
5. comparisons (`circuit compare` output: `comparison.json`, `roc.json`, `union.svg`) found in
   the directory or its subdirectories, or named with `--comparison`: the scores against the
   reference, the ROC curves (of a sweep, of a circuit's ranking) and their AUC, the union
   drawing;
6. the run's settings (`run.yaml`, with the command that repeats the run);
7. a sortable, filterable table of every edge with its kept flag and score (and its position
   group, at positions).

The package sits above `acdc.evaluation` and `acdc.sweeps`, whose readers and plots it uses:

- `source`: what the page is made of (`read_source`), through the one reader of run and sweep
  directories that `circuit compare` uses (`acdc.evaluation.sources`);
- `inputs`: the result files read and checked value by value;
- `figures`: every drawing re-drawn by the project's own code from checked values;
- `svg`: the allow-list every SVG passes before it is pasted into the page;
- `page`: the HTML, the Content-Security-Policy, and the guarded, atomic write
  (`write_report`); `report.css` and `report.js` are the page's style and script.

>>> write_report(Path("runs/demo"))  # doctest: +SKIP
PosixPath('runs/demo/report.html')
"""

from acdc.reports.page import build_report, edge_data, write_report
from acdc.reports.source import Source, read_source

__all__ = ["Source", "build_report", "edge_data", "read_source", "write_report"]
