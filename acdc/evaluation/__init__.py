"""Judging circuits: how faithful a circuit is, how it compares with another or with a known
circuit, and how it behaves across sizes and thresholds.

- `faithfulness`: the metrics of the full model, the empty circuit, a circuit and its
  complement, the normalised faithfulness f(C), and faithfulness curves over any ranking of the
  edges (CPR and CMD), all from one patched model. `evaluate` is `circuit evaluate`: from a run
  directory or a circuit file to `evaluation.json` and the curve's plots (`plots`).
- `compare`: two edge sets of one graph (in both / only in A / only in B, Jaccard) and one
  circuit against a reference (TPR, FPR, precision at edge and node level).
- `roc`, `roc_plot`: the ROC curve of a threshold sweep against a reference, its "pessimistic"
  staircase area as the ACDC paper computes it, and its plot.
- `edge_list`: the plain edge-list file (one edge name a line) that references can be.
- `canonical`: the canonical GPT-2 small circuits (IOI, greater-than) shipped as edge lists,
  and the script that generates them from the published head lists.
- `sources`, `summary`: what `circuit compare` reads and writes.

The definitions are those of the ACDC paper (Conmy et al. 2023) and of the MIB benchmark's
circuit track (Mueller et al. 2025); the documentation's "Judging circuits" page states them.
"""
