"""Judging circuits: how faithful a circuit is, and how faithfulness grows with circuit size.

`faithfulness` holds the computation: the metrics of the full model, the empty circuit, a
circuit and its complement, the normalised faithfulness f(C), and faithfulness curves over any
ranking of the edges (CPR and CMD), all from one patched model. `evaluate` is `circuit
evaluate`: from a run directory or a circuit file to `evaluation.json` and the curve's plots
(`plots`). The definitions are those of `shared/EVALUATION.md`, sections 1 and 2.
"""
