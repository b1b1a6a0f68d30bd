"""Model structure analysis (seed 002): which linear layers a model has and which ones LoRA should target.

    python -m workbench.engine.inspect_model MODEL --workspace DIR [--rank R]

The model is built on the meta device from its config alone — no weights are read or allocated, so a
70B model is analysed in about a second. Prints one JSON line `{"type": "result", ...}` (the protocol
the System screen's worker speaks), or `{"type": "error", ...}`.

Suggested targets are the projections inside the transformer blocks (what PEFT's "all-linear" picks):
LoRA on every attention and MLP projection is the well-tested default. The output head is never
suggested: with a 50k-token vocabulary it holds most of an adapter's parameters while adapting only the
last projection, which is how seed 000 ended up with `target_modules=['lm_head']` and a 160 MB adapter.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any

from workbench.core.errors import UserError
from workbench.core.jobs import InspectRequest
from workbench.core.workspace import Workspace

_ATTENTION_HINTS = ("attn", "attention", "self_attn")
_MLP_HINTS = ("mlp", "feed_forward", "ffn", "experts")


def _role(path: str) -> str:
    parts = path.lower().split(".")[:-1]
    if any(hint in part for part in parts for hint in _ATTENTION_HINTS):
        return "attention"
    if any(hint in part for part in parts for hint in _MLP_HINTS):
        return "mlp"
    return "other"


def _in_out(module) -> tuple[int, int]:
    weight = module.weight
    if type(module).__name__ == "Conv1D":  # GPT-2 style: weight is (in, out)
        return int(weight.shape[0]), int(weight.shape[1])
    return int(module.in_features), int(module.out_features)


def analyse(model, rank: int = 16) -> dict[str, Any]:
    """Linear-like modules grouped by type and leaf name, with counts, shapes and LoRA size at `rank`."""
    from torch import nn

    output_layer = model.get_output_embeddings()
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for path, module in model.named_modules():
        kind = type(module).__name__
        if not (isinstance(module, nn.Linear) or kind == "Conv1D"):
            continue
        leaf = path.rsplit(".", 1)[-1]
        fan_in, fan_out = _in_out(module)
        group = groups.setdefault((kind, leaf), {
            "name": leaf, "type": kind, "count": 0, "roles": set(), "shapes": set(), "parameters": 0,
            "lora_parameters": 0, "example_path": path, "output_head": module is output_layer,
        })
        group["count"] += 1
        group["roles"].add(_role(path))
        group["shapes"].add((fan_in, fan_out))
        group["parameters"] += fan_in * fan_out
        group["lora_parameters"] += rank * (fan_in + fan_out)
    # Model order (q, k, v, o, gate, up, down), the output head last.
    modules = sorted(groups.values(), key=lambda g: g["output_head"])
    by_type: dict[str, list[str]] = defaultdict(list)
    for group in modules:
        group["shapes"] = [list(shape) for shape in sorted(group["shapes"])]
        # GPT-2's c_proj sits in both attention and MLP; PEFT matches the leaf name, so it targets both.
        group["role"] = "+".join(sorted(group.pop("roles")))
        by_type[group["type"]].append(group["name"])
    suggested = [g["name"] for g in modules if g["role"] != "other" and not g["output_head"]]
    if not suggested:  # unusual naming: fall back to every linear layer but the head, as "all-linear" does
        suggested = [g["name"] for g in modules if not g["output_head"]]
    attention_only = [g["name"] for g in modules if g["role"] == "attention" and g["name"] in suggested]
    notes = []
    if "Conv1D" in by_type:
        notes.append("Conv1D layers (GPT-2 style) store weights transposed: set lora.fan_in_fan_out=true")
    head = next((g for g in modules if g["output_head"]), None)
    if head:
        notes.append(f"{head['name']} (output head, {head['parameters']:,} weights) is not suggested: it would hold "
                     f"{head['lora_parameters']:,} LoRA parameters at r={rank} and adapts only the last projection")
    total = sum(p.numel() for p in model.parameters())
    return {
        "model_type": getattr(model.config, "model_type", None),
        "architecture": type(model).__name__,
        "num_parameters": total,
        "rank": rank,
        "linear_modules": modules,
        "by_type": {kind: names for kind, names in by_type.items()},
        "suggested_target_modules": suggested,
        "attention_only_target_modules": attention_only,
        "lora_parameters_suggested": sum(g["lora_parameters"] for g in modules if g["name"] in suggested),
        "notes": notes,
    }


def inspect_model(spec: str, workspace: Workspace, rank: int = 16, log=print) -> dict[str, Any]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from workbench.engine.models import resolve_and_materialize

    if rank < 1:
        raise UserError(f"--rank {rank}: must be at least 1")
    source = resolve_and_materialize(spec, workspace, log=log)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise UserError(f"model {spec!r}: cannot read its config: {str(error).splitlines()[0]}") from None
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except ValueError as error:
        raise UserError(f"model {spec!r}: not a causal language model: {str(error).splitlines()[0]}") from None
    return {"model": spec, **analyse(model, rank)}


def main(argv: list[str] | None = None) -> int:
    from workbench.engine.protocol import emit, run_task

    request, workspace = InspectRequest.from_argv(argv)
    return run_task(lambda: inspect_model(request.model, workspace, request.rank,
                                          log=lambda message: emit("status", message=message)))


if __name__ == "__main__":
    sys.exit(main())
