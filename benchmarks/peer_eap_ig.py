"""The tool's EAP and EAP-IG held to the EAP-IG library (Hanna et al.; the code MIB runs).

Same model, same prompts, same metric, same ablation, both tools: the scores of every residual
edge, the top-n circuits and their faithfulness, and the MIB circuit files each tool writes
read by the other. Writes `OUT/peer-eap-ig.json` and `OUT/peer-eap-ig.md`.

The library is not a dependency of this project and nothing of it is copied here: this script
imports it from the environment. Install it into a separate virtual environment:

    git clone https://github.com/hannamw/EAP-IG /tmp/eap-ig   # or a snapshot of it
    python3 -m venv /tmp/peer-venv && . /tmp/peer-venv/bin/activate
    pip install torch==2.13.0 'transformer-lens>=3.9,<4'
    pip install -e /tmp/eap-ig --no-deps    # it imports torch, transformer_lens, einops, tqdm,
                                            # numpy and matplotlib, all there by now
    pip install -e .                        # this project, from the repository root
    python benchmarks/peer_eap_ig.py --out benchmarks/results --library-ref COMMIT

What is compared, on the bundled `ioi` task and model (`tasks/ioi.yaml`, `models/ioi`; the
checkpoint loaded by the project, `acdc.core.loading.load_model`, for the tool, and as the
TransformerLens `HookedTransformer` the project builds of it, `acdc.core.models.load_hooked`,
for the library):

- the library's dataloader is the task's own prompts: the generator's clean and corrupted
  texts, tokenised by the library (`model.to_tokens`, BOS prepended, right padding) into
  exactly the task's token ids (checked), labels (indirect object, subject);
- metric: the logit difference (answer minus wrong answer) at the last real token; for
  attribution the library gets MIB's `loss=True, mean=True` form (minus the batch mean), the
  tool its `logit_diff` (minus the mean over prompts): the same function of the logits;
- ablation: corrupt (the library's `patching`);
- (a) EAP and EAP-IG (5 steps) scores of every residual edge, the library's with the whole
  task as one batch (and, for the normalisation, in batches of 20 as MIB runs it);
- (b) for n in 10, 50, 100: the tool's `--top-n n` circuit (`run_method`, the pipeline
  `circuit discover` runs) against the library's `apply_topn(n, absolute=True)` (pruned), and
  the faithfulness each tool computes for both circuits: the library's `evaluate_graph` with
  MIB's normalisation (f = (m(C) - m(empty)) / (m(full) - m(empty)), m the mean logit
  difference, full from `evaluate_baseline`, empty from `apply_topn(0)`), the tool's
  `CircuitEvaluator`;
- (c) MIB files: `circuit discover ... --top-n 50` then `circuit export -f mib`, read by
  `Graph.from_json`; the library's `to_json` read by `load_circuit` and by
  `circuit evaluate`; names, counts, flags, scores, faithfulness. The CLI runs for n = 50 (both
  methods); the same readers and writers run in process for every n.

The library allocates its score tensors with `device='cuda'` (`eap.attribute`); where CUDA is
missing, its module is handed a `torch` whose `zeros` puts those tensors on the model's device
instead (nothing else changes). `--dtype float64` runs both tools in double precision, which
separates convention differences from float32 rounding.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does; before torch loads
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

try:
    import eap.attribute as eap_attribute  # noqa: E402
    from eap.evaluate import evaluate_baseline, evaluate_graph  # noqa: E402
    from eap.graph import Graph  # noqa: E402
except ImportError:
    sys.exit("error: the EAP-IG library (`import eap`) is not installed here; see the "
             "docstring of benchmarks/peer_eap_ig.py for how to install it in a separate venv")

from acdc.core.circuit import Circuit, load_circuit  # noqa: E402
from acdc.core.generators.registry import generate_prompts  # noqa: E402
from acdc.core.graph import Graph as ToolGraph  # noqa: E402
from acdc.core.graph import build_graph  # noqa: E402
from acdc.core.loading import DTYPES, LoadedModel, load_model  # noqa: E402
from acdc.core.mib import to_mib  # noqa: E402
from acdc.core.models import load_hooked  # noqa: E402
from acdc.core.selection import (  # noqa: E402
    Selection,
    prune,
    residual_edges,
    select_edges,
    with_direct_edges,
)
from acdc.core.settings import CommonSettings  # noqa: E402
from acdc.core.tasks.reading import read_task  # noqa: E402
from acdc.core.tasks.resolving import resolve_task  # noqa: E402
from acdc.core.tasks.values import Task  # noqa: E402
from acdc.evaluation.faithfulness import CircuitEvaluator  # noqa: E402
from acdc.methods.attribution import EAP, EAP_IG, EapIgSettings, EapSettings  # noqa: E402
from acdc.methods.attribution.scores import edge_attribution  # noqa: E402
from acdc.methods.base import run_method  # noqa: E402

TASK_FILE = ROOT / "tasks" / "ioi.yaml"
SIZES = (10, 50, 100)
IG_STEPS = 5
MIB_BATCH = 20  # MIB's attribution batch size
METHODS = {"EAP": ("EAP", EAP), "EAP-IG": ("EAP-IG-inputs", EAP_IG)}
CLI_METHOD = {"EAP": "eap", "EAP-IG": "eap-ig"}
CLI_SIZE = 50


# --------------------------------------------------------------------------- the library's side


class _TorchOnDevice:
    """`torch`, except that `zeros(..., device='cuda')` lands on `device` (the library's score
    tensors are hard-coded to CUDA)."""

    def __init__(self, device: torch.device):
        self._device = device

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    def zeros(self, *args: Any, device: Any = None, **kwargs: Any) -> torch.Tensor:
        return torch.zeros(*args, device=self._device if device == "cuda" else device, **kwargs)


def library_model(dtype: str) -> Any:
    """The bundled ioi model as the library needs it: TransformerLens' `HookedTransformer` of
    the checkpoint as the project builds it (`acdc.core.models.load_hooked`, whose weights the
    project's own loading equals bit for bit), in `dtype`, with the hooks the library reads
    switched on and a tokenizer for `to_tokens`."""
    from transformers import PreTrainedTokenizerFast

    model, tokenizer = load_hooked(str(ROOT / "models" / "ioi"))
    model = model.to(DTYPES[dtype], print_details=False)
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    assert tokenizer is not None
    model.set_tokenizer(PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend, bos_token="<bos>", pad_token="<pad>",
        unk_token="<unk>", name_or_path=str(ROOT / "models" / "ioi")),
        default_padding_side="right")
    if not torch.cuda.is_available():
        eap_attribute.torch = _TorchOnDevice(model.cfg.device)  # type: ignore[assignment]
    return model


def library_data(task: Task, texts: list[dict[str, Any]], model: Any,
                 batch_size: int) -> torch.utils.data.DataLoader:
    """The task's prompts as the library's dataloader: (clean texts, corrupted texts, labels
    [batch, 2] = (answer, wrong answer)); the library's tokenisation is checked to give the
    task's own token ids."""
    from eap.utils import tokenize_plus

    assert task.answers is not None and task.wrong_answers is not None
    labels = [(a[0], w[0]) for a, w in zip(task.answers, task.wrong_answers, strict=True)]
    assert all(len(a) == 1 for a in task.answers) and all(len(w) == 1 for w in task.wrong_answers)
    for key, ids in (("clean", task.clean), ("corrupt", task.corrupt)):
        tokens, _, lengths, _ = tokenize_plus(model, [t[key] for t in texts])
        found = [tokens[i, :lengths[i]].tolist() for i in range(len(texts))]
        assert found == ids, f"the library tokenises the {key} prompts differently"
    rows = [(t["clean"], t["corrupt"], label) for t, label in zip(texts, labels, strict=True)]

    def collate(items):
        clean, corrupt, label = zip(*items, strict=True)
        return list(clean), list(corrupt), torch.tensor(label)

    return torch.utils.data.DataLoader(rows, batch_size=batch_size, collate_fn=collate)


def logit_difference(logits: torch.Tensor, clean_logits: Any, input_lengths: torch.Tensor,
                     labels: torch.Tensor, mean: bool = True, loss: bool = False) -> torch.Tensor:
    """The library's metric signature: answer minus wrong-answer logit at each prompt's last
    real token; `loss` negates it (MIB's attribution form), `mean` averages over the batch."""
    last = logits[torch.arange(len(logits)), input_lengths - 1]
    difference = last.gather(-1, labels[:, :1].to(last.device)) - last.gather(
        -1, labels[:, 1:].to(last.device))
    difference = difference[:, 0]
    if loss:
        difference = -difference
    return difference.mean() if mean else difference


ATTRIBUTION_METRIC = partial(logit_difference, mean=True, loss=True)
EVALUATION_METRIC = partial(logit_difference, mean=False, loss=False)


def library_scores(model: Any, data: Any, method: str) -> Graph:
    """The library's scores as MIB computes them (`attribute`), held in its graph."""
    graph = Graph.from_model(model)
    eap_attribute.attribute(model, graph, data, ATTRIBUTION_METRIC, method, "patching",
                            ig_steps=IG_STEPS if method != "EAP" else None, quiet=True)
    return graph


def library_raw_scores(model: Any, data: Any, method: str) -> dict[str, float]:
    """The library's scores before `attribute` stores them in its graph's float32 tensor: the
    matrix its `get_scores_eap` / `get_scores_eap_ig` return, in the model's dtype."""
    graph = Graph.from_model(model)
    if method == "EAP":
        matrix = eap_attribute.get_scores_eap(model, graph, data, ATTRIBUTION_METRIC,
                                              intervention="patching", quiet=True)
    else:
        matrix = eap_attribute.get_scores_eap_ig(model, graph, data, ATTRIBUTION_METRIC,
                                                 steps=IG_STEPS, quiet=True)
    return {name: float(matrix[edge.matrix_index]) for name, edge in graph.edges.items()}


def with_edges(model: Any, names: set[str]) -> Graph:
    """A fresh library graph whose in-graph edges are `names` (nodes follow when it prunes)."""
    graph = Graph.from_model(model)
    graph.in_graph[:] = False
    for name in names:
        graph.edges[name].in_graph = True
    return graph


class LibraryEvaluator:
    """MIB's faithfulness with the library: m = the mean logit difference over the prompts;
    full from `evaluate_baseline`, empty from `apply_topn(0)` (MIB's
    `evaluate_area_under_curve`)."""

    def __init__(self, model: Any, data: Any):
        self.model, self.data = model, data
        self.full = float(evaluate_baseline(model, data, EVALUATION_METRIC, quiet=True).mean())
        empty = Graph.from_model(model)
        empty.apply_topn(0, True)
        self.empty = float(self.per_prompt(empty).mean())

    def per_prompt(self, graph: Graph) -> torch.Tensor:
        return evaluate_graph(self.model, graph, self.data, EVALUATION_METRIC, quiet=True,
                              intervention="patching").double()

    def evaluate(self, graph: Graph) -> dict[str, Any]:
        values = self.per_prompt(graph)
        mean = float(values.mean())
        return {"f": (mean - self.empty) / (self.full - self.empty), "logit_diff": mean,
                "per_prompt": values.tolist(), "n_edges": int(graph.count_included_edges())}


# --------------------------------------------------------------------------- the tool's side


def residual_names(graph: ToolGraph, kept: Any) -> set[str]:
    return {e.name for e in residual_edges(graph) if kept[e.index]}


def tool_kept(graph: ToolGraph, names: set[str]) -> list[bool]:
    """The tool's circuit of the residual edges `names` (direct edges follow their inputs)."""
    return with_direct_edges(graph, [e.kind == "residual" and e.name in names
                                     for e in graph.edges])


def tool_evaluate(evaluator: CircuitEvaluator, kept: list[bool]) -> dict[str, Any]:
    metric = evaluator.evaluate(kept).metrics["logit_diff"]
    return {"f": metric.faithfulness, "logit_diff": metric.circuit.mean,
            "per_prompt": list(metric.circuit.per_prompt), "full": metric.full.mean,
            "empty": metric.empty.mean}


def cli(*args: str) -> str:
    """One `circuit` command (this interpreter, the repository's cli.py); its output."""
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True,
                          text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"circuit {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


# --------------------------------------------------------------------------- comparisons


def compare_scores(tool: dict[str, float], library: dict[str, float]) -> dict[str, Any]:
    """Pearson, the largest difference relative to the largest |score|, the largest per-edge
    relative difference (edges above 1e-3 of the largest |score|), and the ratio tool/library
    (least squares, and its range over those edges)."""
    names = sorted(library)
    a = torch.tensor([tool[n] for n in names], dtype=torch.float64)
    b = torch.tensor([library[n] for n in names], dtype=torch.float64)
    big = b.abs() >= 1e-3 * b.abs().max()
    ratio = a[big] / b[big]
    pearson = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    return {"n_edges": len(names), "pearson": pearson,
            "max_abs_diff": float((a - b).abs().max()), "max_abs_score": float(b.abs().max()),
            "max_diff_over_max_score": float((a - b).abs().max() / b.abs().max()),
            "max_rel_diff": float(((a - b).abs()[big] / b.abs()[big]).max()),
            "n_rel_edges": int(big.sum()),
            "ratio_lstsq": float((a * b).sum() / (b * b).sum()),
            "ratio_min": float(ratio.min()), "ratio_max": float(ratio.max())}


def boundary(scores: dict[str, float], n: int) -> dict[str, Any]:
    """|score| of the n-th and (n+1)-th edges by |score|: the margin a ranking has at n."""
    ranked = sorted((abs(s) for s in scores.values()), reverse=True)
    nth = ranked[n - 1] if n >= 1 else math.inf
    after = ranked[n] if n < len(ranked) else 0.0
    return {"nth": nth, "next": after, "gap": nth - after}


def explain(tool_set: set[str], lib_set: set[str], tool_scores: dict[str, float],
            lib_scores: dict[str, float]) -> list[dict[str, Any]]:
    return [{"edge": name, "in": "tool" if name in tool_set else "library",
             "tool_score": tool_scores[name], "library_score": lib_scores[name]}
            for name in sorted(tool_set ^ lib_set)]


# --------------------------------------------------------------------------- the run


def run(dtype: str, cli_dir: Path | None) -> dict[str, Any]:
    spec = read_task(str(TASK_FILE))
    tool = load_model(spec.model, dtype=dtype)
    task = resolve_task(spec, tool.tokenizer, tool.shape.d_vocab, tool.shape.n_ctx)
    assert spec.generator is not None
    texts = generate_prompts(spec.generator["kind"], spec.generator, tool.tokenizer,
                             tool.shape.d_vocab, spec.source)
    model = library_model(dtype)
    data = library_data(task, texts, model, batch_size=task.n_prompts)
    data_mib = library_data(task, texts, model, batch_size=MIB_BATCH)

    common = CommonSettings(metric="logit_diff", ablation="corrupt")
    graph = build_graph(tool.shape.graph_shape(common.granularity))
    lib_names = set(Graph.from_model(model).edges)
    tool_names = {e.name for e in residual_edges(graph)}
    report: dict[str, Any] = {
        "dtype": dtype, "n_prompts": task.n_prompts,
        "edges": {"tool_residual": len(tool_names), "tool_all": len(graph.edges),
                  "library": len(lib_names), "same_names": tool_names == lib_names},
        "scores": {}, "top_n": {}, "mib_files": {}}
    assert tool_names == lib_names, "the two graphs name different edges"

    evaluator = CircuitEvaluator(tool, task, graph, "corrupt", metrics=["logit_diff"])
    library_eval = LibraryEvaluator(model, data)
    report["baselines"] = {
        "tool": {"full": evaluator.full["logit_diff"].mean,
                 "empty": evaluator.empty["logit_diff"].mean},
        "library": {"full": library_eval.full, "empty": library_eval.empty}}

    for label, (lib_method, method) in METHODS.items():
        settings_type = EapIgSettings if label == "EAP-IG" else EapSettings
        extra = {"ig_steps": IG_STEPS} if label == "EAP-IG" else {}
        start = time.perf_counter()
        lib_graph = library_scores(model, data, lib_method)
        lib_seconds = time.perf_counter() - start
        lib_scores = {name: float(edge.score) for name, edge in lib_graph.edges.items()}
        lib_raw = library_raw_scores(model, data, lib_method)
        lib_mib = library_scores(model, data_mib, lib_method)
        lib_mib_scores = {name: float(edge.score) for name, edge in lib_mib.edges.items()}
        start = time.perf_counter()
        per_prompt, _ = edge_attribution(tool, task, common, settings_type(per_prompt=True,
                                                                           **extra), graph)
        tool_seconds = time.perf_counter() - start
        summed, _ = edge_attribution(tool, task, common, settings_type(**extra), graph)
        by_name = {e.name: per_prompt[e.index] for e in residual_edges(graph)}
        summed_by_name = {e.name: summed[e.index] for e in residual_edges(graph)}
        report["scores"][label] = {
            "per_prompt_vs_library": compare_scores(by_name, lib_scores),
            "per_prompt_vs_library_raw": compare_scores(by_name, lib_raw),
            "default_vs_library": compare_scores(summed_by_name, lib_scores),
            "per_prompt_vs_library_batch20": compare_scores(by_name, lib_mib_scores),
            "seconds": {"tool": tool_seconds, "library": lib_seconds}}

        report["top_n"][label] = {}
        for n in SIZES:
            circuit = run_method(method, tool, task, common, settings_type(per_prompt=True,
                                                                           **extra),
                                 Selection(top_n=n), graph=graph)
            selected = select_edges(graph, list(circuit.scores), Selection(top_n=n))
            tool_pre = residual_names(graph, selected)
            tool_set = residual_names(graph, circuit.kept)
            lib_graph.apply_topn(n, absolute=True, prune=False)
            lib_pre = {name for name, edge in lib_graph.edges.items() if edge.in_graph}
            lib_graph.apply_topn(n, absolute=True)
            lib_set = {name for name, edge in lib_graph.edges.items() if edge.in_graph}
            lib_kept = tool_kept(graph, lib_set)
            assert prune(graph, lib_kept) == lib_kept, "the library's circuit is not pruned"
            own_tool = tool_evaluate(evaluator, list(circuit.kept))
            other_tool = tool_evaluate(evaluator, lib_kept)
            own_lib = library_eval.evaluate(with_edges(model, lib_set))
            other_lib = library_eval.evaluate(with_edges(model, tool_set))
            report["top_n"][label][n] = {
                "selected_same": tool_pre == lib_pre, "pruned_same": tool_set == lib_set,
                "tool_edges": len(tool_set), "library_edges": len(lib_set),
                "tool_edges_with_direct": circuit.n_edges_kept,
                "selected_differences": explain(tool_pre, lib_pre, by_name, lib_scores),
                "boundary_tool": boundary(by_name, n), "boundary_library": boundary(lib_scores, n),
                "f": {"tool_on_tool": own_tool["f"], "tool_on_library": other_tool["f"],
                      "library_on_library": own_lib["f"], "library_on_tool": other_lib["f"],
                      "tool_run_metric": -circuit.results["metric_circuit"]},
                "logit_diff": {"tool_on_tool": own_tool["logit_diff"],
                               "library_on_tool": other_lib["logit_diff"]},
                "per_prompt_max_abs_diff": max(
                    abs(x - y) for x, y in zip(own_tool["per_prompt"], other_lib["per_prompt"],
                                               strict=True)),
                "mib_round_trip": round_trips(circuit, lib_graph, tool, model, evaluator,
                                              library_eval),
            }
        if cli_dir is not None:
            report["mib_files"][label] = cli_round_trip(
                label, dtype, model, lib_graph, evaluator, library_eval, cli_dir / dtype)
    return report


def round_trips(circuit: Circuit, lib_graph: Graph, tool: LoadedModel, model: Any,
                evaluator: CircuitEvaluator, library_eval: LibraryEvaluator) -> dict[str, Any]:
    """In process: the tool's MIB file (`to_mib`) read by `Graph.from_json`, and the
    library's `to_json` (of its pruned top-n graph) read by `load_circuit`."""
    with tempfile.TemporaryDirectory() as tmp:
        tool_file = Path(tmp) / "tool.mib.json"
        tool_file.write_text(json.dumps(to_mib(circuit, tool.shape.d_model)))
        read = Graph.from_json(str(tool_file))
        lib_file = Path(tmp) / "library.json"
        lib_graph.to_json(str(lib_file))
        back = load_circuit(lib_file)
    graph = circuit.graph
    return {
        "tool_to_library": file_check_library(read, circuit, model, library_eval),
        "library_to_tool": file_check_tool(back, lib_graph, graph, evaluator),
    }


def file_check_library(read: Graph, circuit: Circuit, model: Any,
                       library_eval: LibraryEvaluator) -> dict[str, Any]:
    """The tool's circuit as the library reads it: names, counts, flags, scores, node flags
    (unchanged by the library's pruning), and the library's f of it against the tool's."""
    graph = circuit.graph
    kept = {e.name: bool(circuit.kept[e.index]) for e in residual_edges(graph)}
    scores = {e.name: circuit.scores[e.index] for e in residual_edges(graph)}
    flags = {name: bool(edge.in_graph) for name, edge in read.edges.items()}
    nodes = {name: bool(node.in_graph) for name, node in read.nodes.items()}
    before = (read.in_graph.clone(), read.nodes_in_graph.clone())
    read.prune()
    unchanged = bool(torch.equal(before[0], read.in_graph)
                     and torch.equal(before[1], read.nodes_in_graph))
    score_diff = max(abs(float(read.edges[n].score) - (scores[n] or 0.0)) for n in flags)
    return {"same_names": set(flags) == set(Graph.from_model(model).edges),
            "n_in_graph": sum(flags.values()), "tool_n_residual": circuit.n_residual_kept,
            "same_flags": flags == kept, "max_score_diff": score_diff,
            "n_nodes_in_graph": sum(nodes.values()), "library_prune_changes_nothing": unchanged,
            "library_f": library_eval.evaluate(read)["f"]}


def file_check_tool(back: Circuit, lib_graph: Graph, graph: ToolGraph,
                    evaluator: CircuitEvaluator) -> dict[str, Any]:
    """The library's circuit as the tool reads it: counts, flags, scores, and the tool's f."""
    lib_flags = {name: bool(edge.in_graph) for name, edge in lib_graph.edges.items()}
    names = [e.name for e in residual_edges(back.graph)]
    flags = {e.name: bool(back.kept[e.index]) for e in residual_edges(back.graph)}
    score_diff = max(abs((back.scores[back.graph.edge_index[n]] or 0.0)
                         - float(lib_graph.edges[n].score)) for n in names)
    assert [e.name for e in back.graph.edges] == [e.name for e in graph.edges]
    return {"same_names": set(names) == set(lib_flags),
            "n_residual_kept": back.n_residual_kept,
            "library_n_in_graph": int(lib_graph.count_included_edges()),
            "n_kept_with_direct": back.n_edges_kept, "same_flags": flags == lib_flags,
            "max_score_diff": score_diff,
            "tool_f": tool_evaluate(evaluator, list(back.kept))["f"]}


def cli_round_trip(label: str, dtype: str, model: Any, lib_graph: Graph,
                   evaluator: CircuitEvaluator, library_eval: LibraryEvaluator,
                   out: Path) -> dict[str, Any]:
    """Through the command line, at n = CLI_SIZE: `circuit discover` + `circuit export -f mib`
    read by `Graph.from_json`; the library's `to_json` evaluated by `circuit evaluate`."""
    method = CLI_METHOD[label]
    run_dir = out / f"{method}-top{CLI_SIZE}"
    extra = ["--ig-steps", str(IG_STEPS)] if label == "EAP-IG" else []
    dtype_flag = ["--dtype", dtype]
    commands = [
        ["discover", "--task", str(TASK_FILE), "--method", method, "--metric", "logit_diff",
         "--top-n", str(CLI_SIZE), "--per-prompt", *extra, *dtype_flag, "--out", str(run_dir),
         "--quiet"],
        ["export", str(run_dir), "-f", "mib"],
        ["evaluate", str(run_dir), "--metric", "logit_diff"],
    ]
    outputs = [cli(*command) for command in commands]
    circuit = load_circuit(run_dir / "circuit.json")
    tool_eval = json.loads((run_dir / "evaluation.json").read_text())
    read = Graph.from_json(str(run_dir / "circuit.mib.json"))
    to_library = file_check_library(read, circuit, model, library_eval)
    to_library["cli_tool_f"] = tool_eval["metrics"]["logit_diff"]["faithfulness"]

    lib_graph.apply_topn(CLI_SIZE, absolute=True)
    lib_file = out / f"library-{method}-top{CLI_SIZE}.json"
    lib_graph.to_json(str(lib_file))
    lib_f = library_eval.evaluate(with_edges(model, {n for n, e in lib_graph.edges.items()
                                                     if e.in_graph}))["f"]
    evaluate = ["evaluate", str(lib_file), "--task", str(TASK_FILE), "--model",
                str(ROOT / "models" / "ioi"), "--metric", "logit_diff", "--ablation", "corrupt",
                *dtype_flag]
    outputs.append(cli(*evaluate))
    commands.append(evaluate)
    lib_eval_file = lib_file.with_name(lib_file.stem + ".evaluation.json")
    from_library = file_check_tool(load_circuit(lib_file), lib_graph, evaluator.graph, evaluator)
    from_library["cli_tool_f"] = json.loads(lib_eval_file.read_text())[
        "metrics"]["logit_diff"]["faithfulness"]
    from_library["library_f"] = lib_f

    def shown(text: str) -> str:  # the temporary directory as $RUNS, paths in the repository
        return text.replace(str(out.parent), "$RUNS").replace(str(ROOT) + "/", "")

    return {"commands": [shown("circuit " + " ".join(c)) for c in commands],
            "outputs": [shown(o) for o in outputs],
            "tool_to_library": to_library, "library_to_tool": from_library}


# --------------------------------------------------------------------------- report


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Benchmark: `python benchmarks/peer_eap_ig.py` ({report['machine']}, torch "
             f"{report['torch']}, transformer-lens {report['transformer_lens']}, EAP-IG library "
             f"{report['library']}, {report['date']}; a shared 2-core machine, so the seconds "
             f"are indicative only).",
             "",
             "The bundled `ioi` task and model, 100 prompts, logit difference, corrupt ablation "
             "(the library's `patching`). Scores: the tool's `--per-prompt` against the "
             "library with the task as one batch; \"default\" is the tool without "
             "`--per-prompt`; \"batch 20\" the library in MIB's batches of 20. Relative "
             "differences are per edge, over the edges above 1e-3 of the largest |score|. "
             "\"gap at n\": the tool's n-th largest |score| minus the next one, against the "
             "largest score difference between the tools: how far the top-n selection is from "
             "a tie. f: MIB's faithfulness of the circuit (mean logit difference), "
             "\"tool(library)\" = the tool's f of the library's circuit.", ""]
    for block in report["runs"]:
        lines += [f"## {block['dtype']}", "",
                  f"Edges: {block['edges']['library']} residual edges in both graphs "
                  f"(same names: {block['edges']['same_names']}); the tool's graph has "
                  f"{block['edges']['tool_all']} with its direct q/k/v edges.", "",
                  "| method | compared | Pearson | max diff / max score | max rel. diff | "
                  "ratio tool/library (lstsq; min..max) |", "|---|---|---|---|---|---|"]
        for label, row in block["scores"].items():
            for key, name in (("per_prompt_vs_library", "per-prompt vs library"),
                              ("per_prompt_vs_library_raw",
                               "per-prompt vs library, before its float32 graph"),
                              ("default_vs_library", "default vs library"),
                              ("per_prompt_vs_library_batch20", "per-prompt vs library, batch 20")):
                s = row[key]
                lines.append(f"| {label} | {name} | {s['pearson']:.10f} | "
                             f"{s['max_diff_over_max_score']:.2e} | {s['max_rel_diff']:.2e} | "
                             f"{s['ratio_lstsq']:.8g} ({s['ratio_min']:.8g}..{s['ratio_max']:.8g})"
                             f" |")
        seconds = ", ".join(f"{label} tool {row['seconds']['tool']:.2f} s, library "
                            f"{row['seconds']['library']:.2f} s"
                            for label, row in block["scores"].items())
        lines += ["", f"Scoring time (one run each, the shared machine; indicative only): "
                      f"{seconds}."]
        base = block["baselines"]
        lines += ["", f"Baselines (mean logit difference): tool full {base['tool']['full']:.7f}, "
                      f"empty {base['tool']['empty']:.7f}; library full "
                      f"{base['library']['full']:.7f}, empty {base['library']['empty']:.7f}.", "",
                  "| method | n | same selection | same circuit | edges tool / library | "
                  "f tool(tool) | f library(tool) | f library(library) | f tool(library) | "
                  "max |f diff| | per-prompt LD max diff | gap at n / score diff |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, sizes in block["top_n"].items():
            for n, row in sizes.items():
                f = row["f"]
                diff = max(abs(f["tool_on_tool"] - f["library_on_tool"]),
                           abs(f["library_on_library"] - f["tool_on_library"]))
                lines.append(f"| {label} | {n} | {row['selected_same']} | {row['pruned_same']} | "
                             f"{row['tool_edges']} / {row['library_edges']} | "
                             f"{f['tool_on_tool']:.9f} | {f['library_on_tool']:.9f} | "
                             f"{f['library_on_library']:.9f} | {f['tool_on_library']:.9f} | "
                             f"{diff:.1e} | {row['per_prompt_max_abs_diff']:.1e} | "
                             f"{row['boundary_tool']['gap']:.2e} / "
                             f"{block['scores'][label]['per_prompt_vs_library']['max_abs_diff']:.1e}"
                             f" |")
        differences = [(label, n, row) for label, sizes in block["top_n"].items()
                       for n, row in sizes.items() if row["selected_differences"]]
        lines += ["", "Selections that differ (edges in one and not the other): "
                      + ("none." if not differences else "")]
        for label, n, row in differences:
            for d in row["selected_differences"]:
                lines.append(f"- {label} n={n}: `{d['edge']}` only in the {d['in']}'s "
                             f"(tool {d['tool_score']:.9g}, library {d['library_score']:.9g};"
                             f" boundary |score| tool {row['boundary_tool']['nth']:.9g} / "
                             f"{row['boundary_tool']['next']:.9g})")
        lines += ["", "MIB files in process (every n): the tool's `to_mib` read by "
                      "`Graph.from_json`, the library's `to_json` read by `load_circuit`.", "",
                  "| method | n | tool -> library: names, in_graph count (tool), flags, "
                  "max score diff, prune no-op, f library - f tool | library -> tool: names, "
                  "kept residual (library), flags, max score diff, f tool - f library |",
                  "|---|---|---|---|"]
        for label, sizes in block["top_n"].items():
            for n, row in sizes.items():
                a = row["mib_round_trip"]["tool_to_library"]
                b = row["mib_round_trip"]["library_to_tool"]
                lines.append(
                    f"| {label} | {n} | {a['same_names']}, {a['n_in_graph']} "
                    f"({a['tool_n_residual']}), {a['same_flags']}, {a['max_score_diff']:.1e}, "
                    f"{a['library_prune_changes_nothing']}, "
                    f"{a['library_f'] - row['f']['tool_on_tool']:.1e} | {b['same_names']}, "
                    f"{b['n_residual_kept']} ({b['library_n_in_graph']}), {b['same_flags']}, "
                    f"{b['max_score_diff']:.1e}, "
                    f"{b['tool_f'] - row['f']['library_on_library']:.1e} |")
        for label, files in block["mib_files"].items():
            a, b = files["tool_to_library"], files["library_to_tool"]
            lines += ["", f"Through the command line, {label}, n = {CLI_SIZE}:", "", "```"]
            lines += [f"{c}\n  -> {o.splitlines()[-1] if o else ''}"
                      for c, o in zip(files["commands"], files["outputs"], strict=True)]
            lines += ["```", "",
                      f"- tool -> library: names same {a['same_names']}; in_graph "
                      f"{a['n_in_graph']} (tool: {a['tool_n_residual']} residual); flags same "
                      f"{a['same_flags']}; max score diff {a['max_score_diff']:.1e}; library's "
                      f"prune changes nothing: {a['library_prune_changes_nothing']}; f library "
                      f"{a['library_f']:.9f}, `circuit evaluate` {a['cli_tool_f']:.9f} "
                      f"(diff {a['library_f'] - a['cli_tool_f']:.1e})",
                      f"- library -> tool: names same {b['same_names']}; kept residual "
                      f"{b['n_residual_kept']} (library: {b['library_n_in_graph']}), "
                      f"{b['n_kept_with_direct']} with direct edges; flags same "
                      f"{b['same_flags']}; max score diff {b['max_score_diff']:.1e}; f "
                      f"`circuit evaluate` {b['cli_tool_f']:.9f}, library {b['library_f']:.9f} "
                      f"(diff {b['cli_tool_f'] - b['library_f']:.1e})"]
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--dtype", action="append", choices=("float32", "float64"),
                        help="repeat for several (default: float32 and float64)")
    parser.add_argument("--no-cli", action="store_true",
                        help="skip the command-line round trips (about a minute)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--library-ref", default="",
                        help="the library's commit, recorded beside its version (a snapshot "
                             "installed from an archive has no git metadata to read it from)")
    parser.add_argument("--markdown-from", type=Path, metavar="JSON",
                        help="only rewrite the .md beside a .json this script wrote")
    args = parser.parse_args()
    if args.markdown_from is not None:
        report = json.loads(args.markdown_from.read_text())
        args.markdown_from.with_suffix(".md").write_text(markdown(report))
        return
    torch.set_num_threads(args.threads)
    from importlib.metadata import version

    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "torch": torch.__version__,
        "transformer_lens": version("transformer-lens"),
        "library": version("eap") + (f" (hannamw/EAP-IG {args.library_ref})"
                                     if args.library_ref else ""),
        "date": time.strftime("%Y-%m-%d"), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in args.dtype or ["float32", "float64"]:
            print(f"{dtype} ...", flush=True)
            report["runs"].append(run(dtype, None if args.no_cli else Path(tmp)))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peer-eap-ig.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "peer-eap-ig.md").write_text(markdown(report))
    print(f"wrote {args.out / 'peer-eap-ig.md'} and .json")


if __name__ == "__main__":
    main()
