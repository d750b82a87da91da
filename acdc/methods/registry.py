"""The discovery methods `circuit discover --method NAME` can run, by name.

>>> sorted(METHODS)
['acdc', 'eap', 'eap-ig']
"""

from __future__ import annotations

from acdc.errors import AcdcError, did_you_mean
from acdc.methods import acdc, attribution
from acdc.methods.base import Method

METHODS: dict[str, Method] = {method.name: method for method in (acdc.METHOD, attribution.EAP,
                                                               attribution.EAP_IG)}
DEFAULT_METHOD = "acdc"


def get_method(name: str) -> Method:
    """The method called `name`, or one line naming the known ones."""
    if name not in METHODS:
        raise AcdcError(f"unknown method {name!r}{did_you_mean(name, METHODS)}: use one of "
                        f"{', '.join(METHODS)}")
    return METHODS[name]
