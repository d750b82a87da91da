"""SVG fit to be pasted into the report: an allow-list rewrite, never the file as it is.

An SVG is a program as much as a picture: `<script>` (in any case), `on*` attributes,
`<foreignObject>` holding HTML, links to `javascript:`, `<image>`, `<use>` or style sheets that
fetch from the network, `<animate>` changing a link, entities declared in a DOCTYPE. Pasted into
a page, any of these runs or loads when the page is opened. `clean_svg` therefore parses the
file (expat, no DTD processing: a DOCTYPE with declarations of its own is refused, a plain one
such as Graphviz writes is dropped) and writes a new document from what it found, keeping only:

- the drawing elements in `ELEMENTS` (shapes, paths, text, groups, definitions, clip paths,
  markers, gradients, `<use>` and the link `<a>` Graphviz wraps tooltips in); every other
  element is dropped with everything inside it;
- the presentation attributes in `ATTRIBUTES`; a `style` attribute becomes the presentation
  attributes it sets (so that the page's Content-Security-Policy can forbid inline styles);
  every other attribute, event handlers and namespaces included, is dropped;
- links only within the drawing: `href`/`xlink:href` of the form `#id` (never on `<a>`), and
  in values only `url(#id)`; a value that calls any other function (`url(http:...)`,
  `image-set(...)`), holds a CSS escape or comment, or an `@`, is dropped;
- text, escaped.

Ids are prefixed (`prefix-id`) and every `#id` reference with them, so that drawings in one page
never share an id and none can take the name of an element of the page itself.

>>> clean_svg('<svg onload="alert(1)"><SCRIPT>alert(2)</SCRIPT><rect id="r" '
...           'fill="url(#r)" style="stroke: red; background: url(http://x)"/></svg>', "p")
'<svg><rect id="p-r" fill="url(#p-r)" stroke="red"></rect></svg>'
"""

from __future__ import annotations

import re
from html import escape
from typing import Any
from xml.parsers import expat

from acdc.core.files import FileError

ELEMENTS = frozenset({
    "svg", "g", "defs", "title", "desc", "symbol", "use", "a", "switch",
    "path", "rect", "circle", "ellipse", "line", "polyline", "polygon",
    "text", "tspan", "textPath",
    "clipPath", "marker", "linearGradient", "radialGradient", "stop", "pattern", "mask",
})
TEXT_ELEMENTS = frozenset({"title", "desc", "text", "tspan", "textPath"})

# Presentation properties: allowed as attributes, and read out of `style` attributes.
PROPERTIES = frozenset({
    "fill", "fill-opacity", "fill-rule", "stroke", "stroke-width", "stroke-opacity",
    "stroke-dasharray", "stroke-dashoffset", "stroke-linecap", "stroke-linejoin",
    "stroke-miterlimit", "opacity", "color", "visibility", "display", "overflow",
    "font-family", "font-size", "font-weight", "font-style", "font-variant", "font-stretch",
    "text-anchor", "dominant-baseline", "alignment-baseline", "baseline-shift",
    "letter-spacing", "word-spacing", "text-decoration", "writing-mode",
    "clip-path", "clip-rule", "mask", "marker-start", "marker-mid", "marker-end",
    "stop-color", "stop-opacity", "vector-effect", "shape-rendering", "text-rendering",
    "paint-order",
})
ATTRIBUTES = PROPERTIES | frozenset({
    "id", "class", "x", "y", "x1", "y1", "x2", "y2", "cx", "cy", "r", "rx", "ry", "fx", "fy",
    "dx", "dy", "width", "height", "viewBox", "preserveAspectRatio", "d", "points",
    "transform", "pathLength", "offset", "gradientUnits", "gradientTransform", "spreadMethod",
    "clipPathUnits", "maskUnits", "maskContentUnits", "patternUnits", "patternContentUnits",
    "patternTransform", "markerWidth", "markerHeight", "markerUnits", "refX", "refY", "orient",
    "textLength", "lengthAdjust", "startOffset", "xml:space", "version",
    "href", "xlink:href", "xlink:title",
})
LINKS = frozenset({"href", "xlink:href"})
# Functions a value may call: colours and transforms (nothing that fetches), and url(#id).
FUNCTIONS = frozenset({"url", "rgb", "rgba", "hsl", "hsla", "matrix", "translate", "scale",
                       "rotate", "skewx", "skewy"})

MAX_DEPTH = 200  # nested elements
MAX_VALUE = 1 << 20  # characters of one attribute value (a long path's `d`)

_ID = re.compile(r"[A-Za-z_][\w.:-]{0,200}")
_CLASS = re.compile(r"[\w -]{0,200}")
_FRAGMENT = re.compile(r"#([A-Za-z_][\w.:-]{0,200})")
_FUNCTION = re.compile(r"([A-Za-z_-][\w-]*)\s*\(")
_URL = re.compile(r"url\(\s*(['\"]?)#([A-Za-z_][\w.:-]{0,200})\1\s*\)", re.I)


class _Refused(Exception):
    """The document cannot be cleaned (a DTD of its own, nesting too deep)."""


def clean_svg(text: str, prefix: str, source: str = "the drawing") -> str:
    """The allow-listed copy of the SVG document `text` (see the module docstring), its ids
    prefixed with `prefix`. Raises `FileError` naming `source` when `text` is not an SVG
    document: not well-formed XML, a root other than `<svg>`, a DOCTYPE with declarations,
    elements nested more than `MAX_DEPTH` deep."""
    return _Cleaner(prefix).clean(text, source)


class _Cleaner:
    def __init__(self, prefix: str) -> None:
        self.prefix = re.sub(r"[^\w-]", "", prefix) or "svg"
        self.out: list[str] = []
        self.open: list[str] = []  # the kept elements now open
        self.skipping = 0  # depth inside a dropped element
        self.depth = 0
        self.seen_root = False

    def clean(self, text: str, source: str) -> str:
        parser = expat.ParserCreate()
        parser.ordered_attributes = True
        parser.buffer_text = True
        parser.StartDoctypeDeclHandler = self.doctype
        parser.EntityDeclHandler = self.entity
        parser.SkippedEntityHandler = self.skipped_entity
        parser.ExternalEntityRefHandler = self.external_entity
        parser.StartElementHandler = self.start
        parser.EndElementHandler = self.end
        parser.CharacterDataHandler = self.characters
        try:
            parser.Parse(text, True)
        except expat.ExpatError as error:
            raise FileError(f"{source}: not an SVG document (line {error.lineno}: "
                            f"{expat.ErrorString(error.code)})") from None
        except _Refused as error:
            raise FileError(f"{source}: {error}") from None
        if not self.seen_root:
            raise FileError(f"{source}: not an SVG document (no <svg> element)")
        return "".join(self.out)

    # DTDs: a plain `<!DOCTYPE svg PUBLIC ...>` is harmless (expat never fetches it); one that
    # declares anything, or an entity it cannot resolve, is refused.
    def doctype(self, name: str, system_id: Any, public_id: Any, has_internal: int) -> None:
        if has_internal:
            raise _Refused("declares entities or elements in its DOCTYPE")

    def entity(self, *args: Any) -> None:
        raise _Refused("declares an entity")

    def skipped_entity(self, name: str, is_parameter: int) -> None:
        raise _Refused(f"refers to the undeclared entity &{name[:40]};")

    def external_entity(self, *args: Any) -> int:
        raise _Refused("refers to an external entity")

    def start(self, name: str, attributes: list[str]) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Refused(f"elements nested more than {MAX_DEPTH} deep")
        if not self.seen_root:
            if name != "svg":
                raise _Refused(f"not an SVG document (its root is <{name[:40]}>)")
            self.seen_root = True
        if self.skipping or name not in ELEMENTS:
            self.skipping += 1
            return
        pairs = dict(zip(attributes[::2], attributes[1::2], strict=True))
        kept = self.attributes(name, pairs)
        self.out.append(f"<{name}" + "".join(f' {key}="{escape(value)}"'
                                             for key, value in kept.items()) + ">")
        self.open.append(name)

    def end(self, name: str) -> None:
        self.depth -= 1
        if self.skipping:
            self.skipping -= 1
            return
        self.out.append(f"</{self.open.pop()}>")

    def characters(self, data: str) -> None:
        if self.skipping or not self.open:
            return
        if self.open[-1] in TEXT_ELEMENTS or not data.strip():
            self.out.append(escape(data, quote=False))

    def attributes(self, element: str, given: dict[str, str]) -> dict[str, str]:
        kept: dict[str, str] = {}
        for key, value in given.items():
            if key == "style":
                continue
            cleaned = self.value(element, key, value)
            if cleaned is not None:
                kept[key] = cleaned
        for key, value in _declarations(given.get("style", "")):
            cleaned = self.value(element, key, value) if key in PROPERTIES else None
            if cleaned is not None:
                kept[key] = cleaned  # a style wins over the attribute, as in CSS
        return kept

    def value(self, element: str, key: str, value: str) -> str | None:
        """The value to keep for one attribute, or None to drop it."""
        if key not in ATTRIBUTES or len(value) > MAX_VALUE:
            return None
        if key == "xlink:title":  # a tooltip: text, never fetched
            return value
        if key == "id":
            return f"{self.prefix}-{value}" if _ID.fullmatch(value) else None
        if key == "class":
            return value if _CLASS.fullmatch(value) else None
        if key in LINKS:
            found = _FRAGMENT.fullmatch(value.strip())
            if element == "a" or found is None:
                return None
            return f"#{self.prefix}-{found.group(1)}"
        if not _loads_nothing(value):
            return None
        return _URL.sub(lambda m: f"url(#{self.prefix}-{m.group(2)})", value)


def _loads_nothing(value: str) -> bool:
    """True when a presentation value can fetch nothing: no CSS escape, comment or at-rule, and
    no function but those of `FUNCTIONS`, `url()` only as `url(#id)`."""
    if any(mark in value for mark in ("\\", "/*", "@", "<", "&")):
        return False
    if any(name.lower() not in FUNCTIONS for name in _FUNCTION.findall(value)):
        return False
    urls = len(re.findall(r"url\s*\(", value, re.I))
    return urls == len(_URL.findall(value))


def _declarations(style: str) -> list[tuple[str, str]]:
    """The `property: value` pairs of a style attribute (properties lower case)."""
    pairs = []
    for part in style.split(";"):
        key, colon, value = part.partition(":")
        if colon:
            pairs.append((key.strip().lower(), value.strip()))
    return pairs
