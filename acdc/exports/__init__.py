"""Ways out of the tool for a circuit: `dot` (DOT source, SVG and PNG through Graphviz)."""
