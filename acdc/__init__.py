"""circuit: automated circuit discovery (ACDC) for TransformerLens models.

Modules, one concept each: `graph` (the edge graph), `models` (loading; the only
transformer_lens importer), `patching` (the patched forward), `metrics`, `tasks` (task files),
`engine` (the ACDC search), `export` (JSON, DOT, SVG), `zoo` (the bundled models' training).
"""

__version__ = "0.1.0"
