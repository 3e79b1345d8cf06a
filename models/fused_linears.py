"""Horizontal fusion of sibling linears for compiled decoder layers: q/k/v and gate/up become one GEMM each.

Linears that read the same input (q_proj, k_proj, v_proj; gate_proj, up_proj) run as one linear over their
concatenated weights, then split. The parameters, the checkpoint and the results stay as they are (the weights
are concatenated inside the compiled graph, and autograd splits the gradient back); the GEMMs get wider, which
matters most for the thin k/v projections of grouped-query attention (896 -> 128 here: their weight gradients ran
at a tenth of the GPU's matrix rate).

Used as an Inductor pre-grad pass: `layer.compile(options={"pre_grad_custom_pass": FuseSiblingLinears()})`.
"""

from __future__ import annotations

import hashlib
import operator
from collections import defaultdict
from pathlib import Path

import torch
from torch._inductor.custom_graph_pass import CustomGraphPass

LINEARS = (torch._C._nn.linear, torch.nn.functional.linear)


def _example(node) -> torch.Tensor | None:
    return node.meta.get("example_value") if isinstance(node, torch.fx.Node) else None


def _linear_parts(node: torch.fx.Node) -> tuple | None:
    """(input, weight, bias) of a linear call whose weight shape is known, else None."""
    if node.op != "call_function" or node.target not in LINEARS:
        return None
    args = [*node.args, *[None] * 3][:3]
    x, weight, bias = args[0], node.kwargs.get("weight", args[1]), node.kwargs.get("bias", args[2])
    return (x, weight, bias) if _example(weight) is not None and _example(weight).dim() == 2 else None


def _cat(graph: torch.fx.Graph, nodes: list) -> torch.fx.Node:
    fused = graph.call_function(torch.cat, (nodes,), {"dim": 0})
    fused.meta["example_value"] = torch.cat([_example(n) for n in nodes], dim=0)
    return fused


def fuse_sibling_linears(graph: torch.fx.Graph) -> int:
    """Rewrite each group of linears sharing an input (and all with, or all without, a bias) as one; returns how
    many groups were fused."""
    groups = defaultdict(list)
    for node in graph.nodes:
        parts = _linear_parts(node)
        if parts is not None:
            x, weight, bias = parts
            groups[(x, bias is None, _example(weight).shape[1], _example(weight).dtype)].append((node, weight, bias))
    fused = 0
    for (x, no_bias, _, _), members in groups.items():
        if len(members) < 2:
            continue
        with graph.inserting_before(members[0][0]):
            weight = _cat(graph, [w for _, w, _ in members])
            bias = None if no_bias else _cat(graph, [b for _, _, b in members])
            output = graph.call_function(torch._C._nn.linear, (x, weight, bias))
            pieces = graph.call_function(
                torch.split, (output, [_example(w).shape[0] for _, w, _ in members]), {"dim": -1}
            )
            split = [graph.call_function(operator.getitem, (pieces, i)) for i in range(len(members))]
        for piece, (node, _, _) in zip(split, members, strict=True):
            piece.meta.update(node.meta)
            node.replace_all_uses_with(piece)
            graph.erase_node(node)
        fused += 1
    return fused


class FuseSiblingLinears(CustomGraphPass):
    """fuse_sibling_linears as an Inductor custom pass; its uuid (this file's hash) keys Inductor's compile cache."""

    def __call__(self, graph: torch.fx.Graph) -> None:
        fuse_sibling_linears(graph)

    def uuid(self) -> bytes:
        return hashlib.sha256(Path(__file__).read_bytes()).digest()
