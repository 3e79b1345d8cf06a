"""Replay final_rl_probe's dumps on a GPU: the policy's weights and batch at its first non-finite step, forward and
backward under each attention variant (plain SDPA, padded SDPA, eager) and SDPA backend, in bf16 autocast and fp32;
prints how many parameters got non-finite gradients (two repeats each).

    python -m models.benchmarks.final_rl_replay <folder holding */<pid>_step<N>.pt>
"""

import glob
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AutoModelForCausalLM

from models.factory import resolve_source
from models.padded_attention import use_padded_sdpa


def grads_bad(d, impl, backends, autocast):
    inp = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in d["inputs"].items()}
    model = AutoModelForCausalLM.from_pretrained(
        resolve_source("builtin:tiny_base"), attn_implementation="eager" if impl == "eager" else "sdpa"
    ).cuda()
    if impl == "padded":
        use_padded_sdpa(model)
    model.load_state_dict(d["weights_before_step"])
    ids = torch.cat([inp["prompt_ids"], inp["completion_ids"]], 1)
    mask = torch.cat([inp["prompt_mask"], inp["completion_mask"]], 1)
    L = inp["completion_ids"].size(1)
    with sdpa_kernel(backends), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        logp = (
            (out.logits[:, -L - 1 : -1].float() / 0.7)
            .log_softmax(-1)
            .gather(-1, inp["completion_ids"][..., None])[..., 0]
        )
        loss = (
            -(logp * inp["completion_mask"] * inp["advantages"][:, None]).sum() / inp["completion_mask"].sum()
            + 1e-3 * (logp * inp["completion_mask"]).sum()
        )
    hidden_bad = [int((~torch.isfinite(h.float())).any(-1).sum()) for h in out.hidden_states]
    loss.backward()
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    return len(bad), hidden_bad, float(loss)


ALL = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]
variants = [
    ("sdpa", ALL, True),
    ("padded", ALL, True),
    ("sdpa", [SDPBackend.EFFICIENT_ATTENTION], True),
    ("sdpa", [SDPBackend.CUDNN_ATTENTION], True),
    ("sdpa", [SDPBackend.MATH], True),
    ("sdpa", ALL, False),
    ("eager", ALL, True),
]


def main() -> None:
    for f in sorted(glob.glob(sys.argv[1] + "/*/*.pt")):
        d = torch.load(f, weights_only=False)
        for impl, backends, autocast in variants:
            name = f"{impl} {'+'.join(b.name.split('_')[0] for b in backends)} {'bf16' if autocast else 'fp32'}"
            try:
                runs = [grads_bad(d, impl, backends, autocast) for _ in range(2)]
                print(
                    f.split("/")[-1],
                    name,
                    "params with non-finite grads:",
                    [r[0] for r in runs],
                    "non-finite hidden rows:",
                    runs[0][1],
                    "loss",
                    runs[0][2],
                    flush=True,
                )
            except Exception as err:
                print(f.split("/")[-1], name, "error:", str(err).splitlines()[0][:150], flush=True)


if __name__ == "__main__":
    main()
