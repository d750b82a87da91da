"""Judging circuits: comparisons between circuits, ROC against a known circuit, canonical circuits.

- `compare`: two edge sets of one graph (in both / only in A / only in B, Jaccard) and one
  circuit against a reference (TPR, FPR, precision at edge and node level).
- `roc`: the ROC curve of a threshold sweep against a reference and its "pessimistic"
  staircase area, as the ACDC paper computes them.
- `edge_list`: the plain edge-list file (one edge name a line) that references can be.
- `canonical`: the canonical GPT-2 small circuits (IOI, greater-than) shipped as edge lists,
  and the script that generates them from the published head lists.
- `sources`: what `circuit compare` reads: circuit files, run directories, sweep directories
  and references.
"""
