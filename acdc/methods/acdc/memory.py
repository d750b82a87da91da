"""How much memory an ACDC run holds, from the model's shape alone (`circuit graph`)."""

from __future__ import annotations

INPUT_CACHE_BYTES = 256 * 2**20  # committed receiver inputs kept between tests
LAYER_TERM_CACHE_BYTES = 256 * 2**20  # post-sublayer norms: committed head sums and their terms
TERM_CHANGE_BYTES = 128 * 2**20  # post-sublayer norms: an evaluation's shared term changes
FACTOR_CACHE_BYTES = 256 * 2**20  # head-to-vocabulary factors of the heads feeding the logits


def estimate_memory(shape, n_senders: int, batch: int, seq_len: int, bytes_per_number: int = 4,
                    ablation: str = "corrupt", n_positions: int | None = None,
                    n_groups: int = 0) -> dict[str, int]:
    """Bytes a run holds, from the tensors this module and `propagation.py` allocate.

    `shape` is a `configs.ModelShape`. Counted: parameters (as loaded: a tied unembedding is its
    own copy; key/value matrices at their size under grouped-query attention plus their
    per-query-head copies the engine computes with, a gated MLP's three matrices); every sender's
    output delta and its ablated value `[senders, batch, pos, d_model]` (one of them under zero
    ablation); every head's committed and ablated q/k/v `[3, layers, heads, batch, pos, d_head]`
    (one k and v per query head also under grouped-query attention: each query head's k/v input
    is its own residual copy, so its k and v differ once an edge into it is removed); the cache
    of committed receiver inputs (bounded; with post-sublayer norms also the bounded cache of
    per-layer head sums and their normalised terms, and an evaluation's bounded changes of those
    terms); the largest per-layer temporaries (the
    q/k/v inputs' normalised residual copies, an MLP's hidden layer, three of them for a gated
    MLP, one layer's attention patterns); the stack of one evaluation's changes (a row per
    sender it reaches, for one candidate); the unembedding (the cache of head-to-vocabulary factors,
    bounded, and three logits-sized tensors at the metric positions, one per prompt unless
    `n_positions` says otherwise). At `n_groups` position groups (0: a blind graph), the masks
    have a group axis (a number per edge and group: `positions`) and the engine keeps, for the
    receivers of one layer, where each reads each sender (a number per sender and token). Not
    counted: the Python runtime and libraries (about 0.5-1 GB resident).
    """
    tokens = batch * seq_len
    # the key/value projections ungrouped: a copy per query head (`weights.weights_from_state_dict`)
    ungrouped = (2 * shape.n_layers * (shape.n_heads - shape.n_kv_heads) * shape.d_model
                 * shape.d_head)
    n_params = shape.n_params_loaded + ungrouped
    caches = (1 if ablation == "zero" else 2) * n_senders * tokens * shape.d_model
    qkv = 2 * 3 * shape.n_layers * shape.n_heads * tokens * shape.d_head
    temporaries = max(3 * 3 * shape.n_heads * tokens * shape.d_model,
                      (3 if shape.mlp_kind == "gated" else 2) * tokens * (shape.d_mlp or 0),
                      2 * shape.n_heads * batch * seq_len * seq_len)
    n_receivers = shape.n_layers * (3 * shape.n_heads + int(shape.has_mlp)) + 1
    unembedding = 3 * (n_positions or batch) * shape.d_vocab
    # the changes of one evaluation, one row per sender it reaches (kept between evaluations)
    changes = n_senders * tokens * shape.d_model
    sizes = {"params": n_params, "caches": caches, "qkv": qkv, "temporaries": temporaries,
             "changes": changes, "unembedding": unembedding, "positions": 0}
    if n_groups:
        receivers_per_layer = 3 * shape.n_heads + int(shape.has_mlp)
        n_edges = n_receivers * n_senders  # a bound: receivers read at most every sender
        sizes["positions"] = ((n_groups + 1) * n_edges
                              + receivers_per_layer * n_senders * tokens)
    result = {name: count * bytes_per_number for name, count in sizes.items()}
    result["inputs"] = min(INPUT_CACHE_BYTES,
                           n_receivers * tokens * shape.d_model * bytes_per_number)
    if shape.post_norm:
        terms = n_receivers * shape.n_layers * tokens * shape.d_model * bytes_per_number
        result["inputs"] += (min(LAYER_TERM_CACHE_BYTES, 2 * terms)
                             + min(TERM_CHANGE_BYTES, terms))
    factors = shape.n_layers * shape.n_heads * shape.d_head * shape.d_vocab * bytes_per_number
    result["unembedding"] += min(FACTOR_CACHE_BYTES, factors)
    result["n_params"] = n_params
    result["total"] = sum(result[name] for name in (*sizes, "inputs"))
    return result
