"""Sibling-linear fusion: a Qwen2 decoder layer's q/k/v and gate/up each become one linear, with the same outputs
and the same gradients on the original parameters; linears on different inputs are left alone."""

from __future__ import annotations

import torch

from models.factory import load_model
from models.fused_linears import fuse_sibling_linears


def _compiled(module, fused_groups: list[int]):
    def backend(graph_module, example_inputs):
        fused_groups.append(fuse_sibling_linears(graph_module.graph))
        graph_module.graph.lint()
        graph_module.recompile()
        return graph_module.forward

    return torch.compile(module, backend=backend, dynamic=False)


def _grads(model) -> dict:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_qkv_and_gate_up_fuse_with_the_same_outputs_and_gradients(tiny_qwen2):
    model, _ = load_model(tiny_qwen2, "float32")
    layer = model.model.layers[0]
    x = torch.randn(2, 5, model.config.hidden_size)
    position = model.model.rotary_emb(x, torch.arange(5)[None].expand(2, -1))
    eager = layer(x, position_embeddings=position, attention_mask=None)
    eager.square().sum().backward()
    eager_grads = _grads(layer)
    layer.zero_grad()
    groups: list[int] = []
    fused = _compiled(layer, groups)(x, position_embeddings=position, attention_mask=None)
    fused.square().sum().backward()
    assert groups == [2]  # q/k/v (with biases) and gate/up
    assert torch.allclose(fused, eager, atol=1e-6)
    assert eager_grads.keys() == _grads(layer).keys()
    assert all(torch.allclose(g, eager_grads[name], atol=1e-5) for name, g in _grads(layer).items())


def test_linears_on_different_inputs_or_bias_stay_apart():
    class Branches(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3, bias=False)
            self.c = torch.nn.Linear(3, 2)

        def forward(self, x):
            return self.c(self.a(x)) + self.b(x).sum()

    module, x = Branches(), torch.randn(2, 4)
    groups: list[int] = []
    assert torch.allclose(_compiled(module, groups)(x), module(x))
    assert groups == [0]
