"""The discovery methods `circuit discover --method NAME` can run, by name: the one list.

The command line's choices and help, `circuit methods`, the run pipeline and the benchmarks
all read this registry. `register` adds a method (a test's toy method, a plug-in).

>>> sorted(METHODS)
['acdc', 'eap', 'eap-ig', 'edge-pruning', 'exact', 'hisp', 'sp']
"""

from __future__ import annotations

from acdc.errors import AcdcError, did_you_mean
from acdc.methods import acdc, attribution, edge_pruning, exact, hisp, subnetwork_probing
from acdc.methods.base import Method

METHODS: dict[str, Method] = {}
DEFAULT_METHOD = "acdc"


def register(method: Method) -> Method:
    """Make `method` runnable by name (a name taken is an error)."""
    if method.name in METHODS:
        raise ValueError(f"a method named {method.name!r} is registered already")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The method called `name`, or one line naming the known ones."""
    if name not in METHODS:
        raise AcdcError(f"unknown method {name!r}{did_you_mean(name, METHODS)}: use one of "
                        f"{', '.join(METHODS)}")
    return METHODS[name]


for _method in (acdc.METHOD, attribution.EAP, attribution.EAP_IG, exact.EXACT, hisp.HISP,
                edge_pruning.METHOD, subnetwork_probing.METHOD):
    register(_method)
