"""circuit: automated circuit discovery for transformer language models.

From a notebook or a script, one call per step (`acdc.api`, exposed here):

>>> import acdc
>>> model = acdc.load_model("models/demo")                      # doctest: +SKIP
>>> circuit = acdc.discover(model, "demo", threshold=0.03)      # doctest: +SKIP
>>> acdc.evaluate(circuit, model, "demo")                       # doctest: +SKIP

Layers, lower ones never importing higher ones (the documentation's "Architecture", checked
by tests/test_layers.py): `errors`; `core` (what every method shares: the graph, model loading,
the patched forward, metrics, settings, tasks, selection, the `Circuit` value); `methods`
(discovery methods behind one registry); `exports` (drawings, MIB/GraphML/CSV); `evaluation`
(faithfulness, comparisons, ROC); `run` (a run from settings to files); `sweeps`; `reports`;
`api` (these functions); `cli`. Importing `acdc` is cheap: the functions load their layers
when first used.
"""

from typing import Any

__version__ = "0.1.0"

API = ("load_model", "load_task", "task_spec", "discover", "evaluate", "sweep", "compare",
       "export", "report", "save")
__all__ = ["__version__", *API]


def __getattr__(name: str) -> Any:
    if name in API:
        from acdc import api

        return getattr(api, name)
    raise AttributeError(f"module 'acdc' has no attribute {name!r}")
