"""Discovery methods, each returning a `Circuit`: `base` (the seam), `registry` (by name),
and one package or module per method (`acdc`: the ACDC search). Methods never import each
other."""
