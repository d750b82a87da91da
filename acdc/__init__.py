"""circuit: automated circuit discovery for TransformerLens models.

Layers, lower ones never importing higher ones: `errors`; `core` (what every method shares:
the graph, model loading, the patched forward, metrics, settings, tasks, the `Circuit`
value); `methods` (discovery methods behind one registry, each returning a `Circuit`; ACDC in
`methods/acdc`); `export` (drawings); `run` (a run from settings to files); `zoo` (the bundled
models' training). The README's "Architecture" section says what each may import.
"""

__version__ = "0.1.0"
