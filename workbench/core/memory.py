"""GPU memory estimate for a run, from config.json alone (no weights, no torch), and GPU detection.

The estimate adds: weights (as the trainer loads them: model.dtype, fp32 when `auto`, or 4/8-bit for the
quantized linear layers, plus the 16-bit copies autocast makes of fp32 ones that stay fp32 in training),
adapter parameters, their gradients and optimizer state (fp32), activations saved for the backward pass (with or without
gradient checkpointing), the logits of the loss, and a fixed allowance for the CUDA context.
Parameter counts are exact for the families in `workbench.core.family` (checked against real models by
`presets check`); activations are an approximation that assumes SDPA/flash attention.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

from workbench.core.config import RunConfig
from workbench.core.errors import UserError
from workbench.core.family import family_of_config

GIB = 1024**3
CUDA_CONTEXT_BYTES = 512 * 1024**2  # CUDA context + allocator slack, outside torch's own accounting
FIT_FRACTION = 0.95  # keep a little headroom for fragmentation
LOGITS_BYTES_PER_ELEMENT = 10  # 16-bit logits + fp32 upcast for the loss + fp32 gradient of the logits
# DoRA recomputes the adapted weight and its norm every forward and keeps weight-sized tensors for backward
# (16/3 bytes per base weight, traced with saved_tensors_hooks under bf16 autocast).
DORA_BYTES_PER_WEIGHT = 16 / 3


@dataclass(frozen=True)
class LinearSpec:
    path: str  # the module path inside a layer, e.g. "self_attn.q_proj"
    in_features: int
    out_features: int
    bias: bool
    count: int  # how many such modules in the whole model

    @property
    def leaf(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    def matches(self, target: str) -> bool:
        """PEFT's rule: the full module name equals the target or ends with '.' + target."""
        return self.path == target or self.path.endswith("." + target)


@dataclass(frozen=True)
class ModelShape:
    model_type: str
    family: str
    hidden: int
    layers: int  # decoder layers (all layers of a decoder-only model)
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    max_positions: int = 0
    tied: bool = True
    encoder_layers: int = 0
    encoder_intermediate: int = 0
    qkv_bias: bool = False  # bias on q/k/v (Qwen2)
    linear_bias: bool = False  # bias on every linear (GPT-2, GPT-NeoX, BART)
    gated: bool = False  # T5 v1.1 / mT5: wi_0 and wi_1 instead of wi
    relative_buckets: int = 0  # T5: relative position buckets (a bias table per head in each stack's first layer)

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


def _first(config: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return default


def shape_from_config(config: dict[str, Any]) -> ModelShape:
    """Normalise a config.json of any supported family into the sizes the estimate needs."""
    family = family_of_config(config)
    if family is None:
        raise UserError(f"config.json: model_type {config.get('model_type')!r} is not a supported family")
    model_type = str(config.get("model_type"))
    hidden = int(_first(config, "hidden_size", "n_embd", "d_model", default=0))
    heads = int(_first(config, "num_attention_heads", "n_head", "decoder_attention_heads", "num_heads", default=0))
    if not hidden or not heads or not config.get("vocab_size"):
        raise UserError("config.json: needs hidden size, attention heads and vocab_size for an estimate")
    kv_heads = int(_first(config, "num_key_value_heads", default=heads))
    head_dim = int(_first(config, "head_dim", default=hidden // heads))
    common = dict(model_type=model_type, family=family.name, hidden=hidden, heads=heads, kv_heads=kv_heads,
                  head_dim=head_dim, vocab=int(config["vocab_size"]))
    if family.name == "gpt2":
        return ModelShape(**common, layers=int(config.get("n_layer", 12)),
                          intermediate=int(config.get("n_inner") or 4 * hidden),
                          max_positions=int(config.get("n_positions", 1024)),
                          tied=bool(config.get("tie_word_embeddings", True)), linear_bias=True)
    if family.name == "gpt_neox":
        return ModelShape(**common, layers=int(config["num_hidden_layers"]),
                          intermediate=int(config.get("intermediate_size") or 4 * hidden),
                          tied=bool(config.get("tie_word_embeddings", False)),
                          linear_bias=bool(config.get("attention_bias", True)))
    if family.name == "t5":
        return ModelShape(**{**common, "head_dim": int(config.get("d_kv", 64))},
                          layers=int(_first(config, "num_decoder_layers", "num_layers", default=12)),
                          intermediate=int(config.get("d_ff", 4 * hidden)),
                          encoder_layers=int(config.get("num_layers", 12)),
                          encoder_intermediate=int(config.get("d_ff", 4 * hidden)),
                          tied=bool(config.get("tie_word_embeddings", True)),
                          gated=str(config.get("feed_forward_proj", "relu")).startswith("gated"),
                          relative_buckets=int(config.get("relative_attention_num_buckets", 32)))
    if family.task == "seq2seq":
        return ModelShape(**common, layers=int(config.get("decoder_layers", 12)),
                          intermediate=int(config.get("decoder_ffn_dim", 4 * hidden)),
                          encoder_layers=int(config.get("encoder_layers", 12)),
                          encoder_intermediate=int(config.get("encoder_ffn_dim", 4 * hidden)),
                          max_positions=int(config.get("max_position_embeddings", 1024)),
                          tied=bool(config.get("tie_word_embeddings", True)), linear_bias=True)
    return ModelShape(**common, layers=int(config["num_hidden_layers"]),
                      intermediate=int(config["intermediate_size"]),
                      tied=bool(config.get("tie_word_embeddings", family.name == "gemma")),
                      qkv_bias=model_type == "qwen2" or bool(config.get("attention_bias", False)))


def linear_layers(shape: ModelShape) -> list[LinearSpec]:
    """Every linear (or GPT-2 Conv1D) layer inside the transformer blocks; lm_head is not included."""
    h, i, n = shape.hidden, shape.intermediate, shape.layers
    if shape.family == "gpt2":
        return [LinearSpec("attn.c_attn", h, 3 * h, True, n), LinearSpec("attn.c_proj", h, h, True, n),
                LinearSpec("mlp.c_fc", h, i, True, n), LinearSpec("mlp.c_proj", i, h, True, n)]
    if shape.family == "gpt_neox":
        b = shape.linear_bias
        return [LinearSpec("attention.query_key_value", h, 3 * h, b, n), LinearSpec("attention.dense", h, h, b, n),
                LinearSpec("mlp.dense_h_to_4h", h, i, True, n), LinearSpec("mlp.dense_4h_to_h", i, h, True, n)]
    if shape.family == "t5":
        e, inner = shape.encoder_layers, shape.q_dim
        attention = [LinearSpec(f"SelfAttention.{name}", h, inner, False, e + n) for name in ("q", "k", "v")]
        attention += [LinearSpec(f"EncDecAttention.{name}", h, inner, False, n) for name in ("q", "k", "v")]
        attention += [LinearSpec("SelfAttention.o", inner, h, False, e + n), LinearSpec("EncDecAttention.o", inner, h,
                                                                                         False, n)]
        feed_forward = ["wi_0", "wi_1"] if shape.gated else ["wi"]
        return (attention + [LinearSpec(f"DenseReluDense.{name}", h, i, False, e + n) for name in feed_forward]
                + [LinearSpec("DenseReluDense.wo", i, h, False, e + n)])
    if shape.family == "bart":
        e, ei = shape.encoder_layers, shape.encoder_intermediate
        attention = ("q_proj", "k_proj", "v_proj", "out_proj")
        return (
            [LinearSpec(f"self_attn.{name}", h, h, True, e + n) for name in attention]
            + [LinearSpec(f"encoder_attn.{name}", h, h, True, n) for name in attention]
            + [LinearSpec("encoder.fc1", h, ei, True, e), LinearSpec("encoder.fc2", ei, h, True, e),
               LinearSpec("decoder.fc1", h, i, True, n), LinearSpec("decoder.fc2", i, h, True, n)]
        )
    qb = shape.qkv_bias
    return [
        LinearSpec("self_attn.q_proj", h, shape.q_dim, qb, n), LinearSpec("self_attn.k_proj", h, shape.kv_dim, qb, n),
        LinearSpec("self_attn.v_proj", h, shape.kv_dim, qb, n),
        LinearSpec("self_attn.o_proj", shape.q_dim, h, shape.qkv_bias and shape.model_type != "qwen2", n),
        LinearSpec("mlp.gate_proj", h, i, False, n), LinearSpec("mlp.up_proj", h, i, False, n),
        LinearSpec("mlp.down_proj", i, h, False, n),
    ]


def _norm_parameters(shape: ModelShape) -> int:
    h, n = shape.hidden, shape.layers
    if shape.family in ("gpt2", "gpt_neox"):
        return (2 * n + 1) * 2 * h  # LayerNorm weight + bias, two per block and a final one
    if shape.family == "t5":  # RMS norms (weight only): 2 per encoder block, 3 per decoder block, a final each
        return (2 * shape.encoder_layers + 3 * n + 2) * h
    if shape.family == "bart":
        final = 2 * 2 * h if shape.model_type == "mbart" else 0
        return (2 * shape.encoder_layers + 3 * n + 2) * 2 * h + final
    per_layer = 4 * h if shape.model_type in ("gemma2", "gemma3_text") else 2 * h
    if shape.model_type in ("qwen3", "gemma3_text"):
        per_layer += 2 * shape.head_dim  # q_norm and k_norm
    return n * per_layer + h


def _embedding_parameters(shape: ModelShape) -> int:
    embeddings = shape.vocab * shape.hidden * (1 if shape.tied else 2)
    if shape.family == "gpt2":
        embeddings += shape.max_positions * shape.hidden
    if shape.family == "bart":
        embeddings += 2 * (shape.max_positions + 2) * shape.hidden  # learned positions, offset 2
    embeddings += 2 * shape.relative_buckets * shape.heads  # T5: relative attention bias, encoder and decoder
    return embeddings


def parameter_count(shape: ModelShape) -> int:
    linear = sum(s.count * (s.in_features * s.out_features + (s.out_features if s.bias else 0))
                 for s in linear_layers(shape))
    return linear + _norm_parameters(shape) + _embedding_parameters(shape)


def targeted_layers(shape: ModelShape, target_modules: list[str] | str) -> list[LinearSpec]:
    specs = linear_layers(shape)
    if target_modules == "all-linear":
        return specs
    return [spec for spec in specs if any(spec.matches(target) for target in target_modules)]


def lora_parameter_count(shape: ModelShape, config: RunConfig) -> int:
    """r x (in + out) per wrapped layer, plus DoRA's magnitude vector (out) per wrapped layer."""
    r = config.lora.r
    total = 0
    for spec in targeted_layers(shape, config.lora.target_modules):
        per_module = r * (spec.in_features + spec.out_features)
        if config.lora.use_dora:
            per_module += spec.out_features
        total += spec.count * per_module
    return total


def _quantized_weight_bytes(config: RunConfig, params: int) -> float:
    quant = config.quantization
    if quant.load_in_8bit:
        return params * 1.0 + params / 4096 * 4  # int8 + an fp32 scale per row-ish block
    # 4 bits per weight + an fp32 absmax per 64 weights; double quantization stores it in 8 bits
    # with an fp32 constant per 256 blocks.
    constants = (1 + 4 / 256) / 64 if quant.bnb_4bit_use_double_quant else 4 / 64
    return params * (0.5 + constants)


def _optimizer_bytes_per_parameter(optim: str) -> int:
    if "8bit" in optim:
        return 2
    if optim.startswith("sgd") or optim.startswith("adafactor"):
        return 4
    return 8  # Adam: exp_avg and exp_avg_sq in fp32


def _saved_activation_bytes_per_token(shape: ModelShape, config: RunConfig) -> float:
    """Bytes autograd keeps for backward per token, over all layers, on the CUDA bf16-autocast path with
    frozen base weights and fp32 LoRA adapters. Traced with saved_tensors_hooks on real models: norms keep
    their fp32 input, SDPA keeps q/k/v/output and a log-sum-exp per head, the MLP activation keeps its
    inputs, frozen linears keep nothing, each adapter keeps its dropout mask (1 byte), its 16-bit input
    and its r-wide middle."""
    a = _activation_dtype_bytes(config)
    h, i = shape.hidden, shape.intermediate
    if shape.family in ("gpt2", "gpt_neox", "bart"):
        gelu_saves = 4 if shape.family == "gpt2" else 1  # GPT-2's gelu_new is composite: four saved tensors
        # two LayerNorms (fp32 input, mean, rstd) + q, k, v, output + log-sum-exp + the GELU's inputs
        def block(intermediate: int) -> float:
            return 2 * (4 * h + 8) + a * 4 * h + 4 * shape.heads + gelu_saves * a * intermediate
        per_token = shape.layers * block(i)
        if shape.family == "bart":
            cross_attention = (4 * h + 8) + a * 4 * h + 4 * shape.heads  # third LayerNorm + cross attention
            per_token += shape.layers * cross_attention + shape.encoder_layers * block(shape.encoder_intermediate)
    else:
        norms = 4 if shape.model_type in ("gemma2", "gemma3_text") else 2
        # RMSNorms (fp32 input + rsqrt) + q, k, v, output + log-sum-exp + SiLU/GELU(gate) * up (three i-wide)
        per_token = shape.layers * (norms * (4 * h + 4) + a * (2 * shape.q_dim + 2 * shape.kv_dim)
                                    + 4 * shape.heads + 3 * a * i)
    mask = 1 if config.lora.lora_dropout > 0 else 0
    adapters = sum(spec.count * (spec.in_features * (mask + a) + config.lora.r * a)
                   for spec in targeted_layers(shape, config.lora.target_modules))
    return per_token + adapters


def _activation_dtype_bytes(config: RunConfig) -> int:
    return 4 if config.training.precision == "fp32" or config.model.dtype == "float32" else 2


def _stored_weight_bytes(config: RunConfig) -> int:
    """Bytes per base weight as the trainer loads a model that is not quantized: model.dtype, and float32 when
    it is `auto` (engine.models.load_model's default, on a GPU too)."""
    return 2 if config.model.dtype in ("bfloat16", "float16") else 4


def may_store_frozen_linears_in_16_bits(config: RunConfig) -> bool:
    """Whether engine.build may store the frozen matmul weights in the 16-bit autocast type: not when the
    weights are sharded (FSDP and ZeRO-3 flatten a layer's parameters into one tensor of one dtype), the
    adapter is DoRA (its weight norm reads them outside autocast) or the layers are quantized."""
    return (not config.lora.use_dora and not (config.quantization.load_in_4bit or config.quantization.load_in_8bit)
            and not shards_weights(config))


def _frozen_linears_in_16_bits(config: RunConfig) -> bool:
    """An fp32 base trained under 16-bit autocast whose frozen matmul weights engine.build stores in 16 bits."""
    return (_stored_weight_bytes(config) == 4 and _activation_dtype_bytes(config) == 2
            and may_store_frozen_linears_in_16_bits(config))


def shards_weights(config: RunConfig) -> bool:
    return config.distributed.num_processes > 1 and config.distributed.strategy in ("fsdp", "deepspeed-zero3")


def _frozen_weight_casts(config: RunConfig, shape: ModelShape, gradient_checkpointing: bool) -> float:
    """fp32 base weights under 16-bit autocast: a frozen matmul weight stored in fp32 (the LM head, tied to the
    embeddings; every one with DoRA) is cast to 16 bits on each forward, and autograd keeps the copy for the
    input gradient (autocast caches only weights that require grad). Measured with saved_tensors_hooks: fp32
    storage keeps 2 bytes per matmul weight more than 16-bit storage (doctor --selftest calibration).
    Checkpointing keeps one layer's copies at a time."""
    if _stored_weight_bytes(config) != 4 or _activation_dtype_bytes(config) != 2:
        return 0.0
    blocks = 0 if _frozen_linears_in_16_bits(config) else sum(
        s.count * s.in_features * s.out_features for s in linear_layers(shape))
    layers = shape.layers + shape.encoder_layers
    kept = blocks / max(layers, 1) if gradient_checkpointing else blocks
    return 2.0 * (kept + shape.vocab * shape.hidden)


@dataclass
class MemoryEstimate:
    total_params: int
    trainable_params: int
    weights_bytes: float
    adapter_bytes: float
    gradients_bytes: float
    optimizer_bytes: float
    activations_bytes: float
    logits_bytes: float
    overhead_bytes: float
    gradient_checkpointing: bool
    gpu_name: str | None = None
    gpu_bytes: int | None = None
    model: str | None = None  # the model the estimate is for, where known

    @property
    def total_bytes(self) -> float:
        return (self.weights_bytes + self.adapter_bytes + self.gradients_bytes + self.optimizer_bytes
                + self.activations_bytes + self.logits_bytes + self.overhead_bytes)

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB

    @property
    def fits(self) -> bool | None:
        """None when there is no GPU to compare with."""
        if self.gpu_bytes is None:
            return None
        return self.total_bytes <= FIT_FRACTION * self.gpu_bytes

    def verdict(self) -> str:
        if self.gpu_bytes is None:
            return f"~{self.total_gib:.1f} GiB; no GPU detected"
        word = "fits" if self.fits else "does NOT fit"
        return f"~{self.total_gib:.1f} GiB {word} in {self.gpu_bytes / GIB:.0f} GiB ({self.gpu_name})"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(total_bytes=self.total_bytes, total_gib=round(self.total_gib, 3), fits=self.fits)
        return data

    def rows(self) -> list[tuple[str, str]]:
        """(label, GiB) lines for a table."""
        def gib(value: float) -> str:
            return f"{value / GIB:.2f}"
        checkpointing = "on" if self.gradient_checkpointing else "off"
        return [
            ("weights", gib(self.weights_bytes)),
            ("adapter + grads + optimizer", gib(self.adapter_bytes + self.gradients_bytes + self.optimizer_bytes)),
            (f"activations (checkpointing {checkpointing})", gib(self.activations_bytes)),
            ("logits", gib(self.logits_bytes)),
            *([("CUDA context", gib(self.overhead_bytes))] if self.overhead_bytes else []),
            ("total", gib(self.total_bytes)),
        ]


def estimate_memory(config: RunConfig, shape: ModelShape, gpu: "GpuInfo | None" = None,
                    gradient_checkpointing: bool | None = None, cuda: bool = True) -> MemoryEstimate:
    """Peak training memory of one process for `config` on a model of `shape`; `cuda=False` (a machine
    without a CUDA GPU) counts no CUDA context.

    With several processes (config.distributed), FSDP and DeepSpeed ZeRO-3 split the weights and the
    adapter over them, ZeRO-2 splits gradients and optimizer state, FSDP/ZeRO-3 split those too; DDP
    keeps a full copy per GPU. Activations and logits are per process either way."""
    total = parameter_count(shape)
    trainable = lora_parameter_count(shape, config)
    act_bytes = _activation_dtype_bytes(config)
    quant = config.quantization
    if quant.load_in_4bit or quant.load_in_8bit:
        quantizable = sum(s.count * s.in_features * s.out_features for s in linear_layers(shape))
        weights = _quantized_weight_bytes(config, quantizable) + (total - quantizable) * 2
    else:
        # As loaded: the frozen matmul weights move to 16 bits only after the whole model is in memory (and on
        # the CPU the fp32 file pages stay resident), so the fp32 load is the floor of the peak.
        weights = total * float(_stored_weight_bytes(config))
    if gradient_checkpointing is None:
        gradient_checkpointing = _checkpointing_setting(config, shape, gpu)
    tokens = config.training.per_device_train_batch_size * config.training.max_length
    per_token = _saved_activation_bytes_per_token(shape, config)
    if gradient_checkpointing:
        layers = shape.layers + shape.encoder_layers
        # Only each layer's input is kept; one layer's activations are recomputed at a time.
        per_token = layers * shape.hidden * act_bytes + per_token / max(layers, 1)
    # autocast keeps a 16-bit copy of every fp32 adapter weight it multiplies with
    adapter_casts = trainable * 2 if act_bytes == 2 else 0
    if not (quant.load_in_4bit or quant.load_in_8bit):
        adapter_casts += _frozen_weight_casts(config, shape, gradient_checkpointing)
    if config.lora.use_dora:
        adapter_casts += DORA_BYTES_PER_WEIGHT * sum(
            s.count * s.in_features * s.out_features for s in targeted_layers(shape, config.lora.target_modules))
    processes, strategy = config.distributed.num_processes, config.distributed.strategy
    weight_shards = processes if shards_weights(config) else 1
    state_shards = processes if strategy != "ddp" else 1
    return MemoryEstimate(
        total_params=total,
        trainable_params=trainable,
        weights_bytes=weights / weight_shards,
        adapter_bytes=trainable * 4.0 / weight_shards,
        gradients_bytes=trainable * 4.0 / state_shards,
        optimizer_bytes=trainable * float(_optimizer_bytes_per_parameter(config.training.optim)) / state_shards,
        activations_bytes=tokens * per_token + adapter_casts,
        logits_bytes=tokens * shape.vocab * float(LOGITS_BYTES_PER_ELEMENT),
        overhead_bytes=float(CUDA_CONTEXT_BYTES) if cuda else 0.0,
        gradient_checkpointing=gradient_checkpointing,
        gpu_name=gpu.name if gpu else None,
        gpu_bytes=gpu.total_bytes if gpu else None,
    )


def _checkpointing_setting(config: RunConfig, shape: ModelShape, gpu: "GpuInfo | None") -> bool:
    setting = config.training.gradient_checkpointing
    if setting != "auto":
        return bool(setting)
    return needs_gradient_checkpointing(config, shape, gpu.total_bytes if gpu else None)


def needs_gradient_checkpointing(config: RunConfig, model_info: ModelShape | dict[str, Any],
                                 gpu_memory: int | None) -> bool:
    """Whether to turn gradient checkpointing on: an explicit setting wins; `auto` turns it on only when
    the run would not fit in `gpu_memory` bytes without it (no GPU: off, it only slows the CPU down)."""
    setting = config.training.gradient_checkpointing
    if setting != "auto":
        return bool(setting)
    if gpu_memory is None:
        return False
    shape = model_info if isinstance(model_info, ModelShape) else shape_from_config(model_info)
    without = estimate_memory(config, shape, gradient_checkpointing=False)
    return without.total_bytes > FIT_FRACTION * gpu_memory


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    total_bytes: int


def describe_gpus(gpus: list[GpuInfo]) -> str:
    """One line for a GPU list: '4 x NVIDIA H100 80GB HBM3, 80 GiB each (0-3)'; models listed in turn."""
    if not gpus:
        return "no CUDA GPU"
    groups: list[tuple[str, int, list[int]]] = []
    for gpu in gpus:
        if groups and groups[-1][:2] == (gpu.name, gpu.total_bytes):
            groups[-1][2].append(gpu.index)
        else:
            groups.append((gpu.name, gpu.total_bytes, [gpu.index]))

    def indices(values: list[int]) -> str:
        contiguous = values == list(range(values[0], values[0] + len(values)))
        return f"{values[0]}-{values[-1]}" if contiguous and len(values) > 2 else ",".join(map(str, values))

    def group(name: str, total: int, ids: list[int]) -> str:
        if len(ids) == 1:
            return f"{name}, {total / GIB:.0f} GiB ({ids[0]})"
        return f"{len(ids)} x {name}, {total / GIB:.0f} GiB each ({indices(ids)})"

    return " + ".join(group(*entry) for entry in groups)


def detect_gpus() -> list[GpuInfo]:
    """GPUs from NVML (nvidia-ml-py), else from nvidia-smi; an empty list means no GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            gpus = []
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                name = pynvml.nvmlDeviceGetName(handle)
                name = name.decode() if isinstance(name, bytes) else name
                gpus.append(GpuInfo(index, name, int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)))
            return gpus
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no driver / no library: fall back to nvidia-smi
        pass
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        output = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in output.strip().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit() and parts[2].isdigit():
            gpus.append(GpuInfo(int(parts[0]), parts[1], int(parts[2]) * 1024**2))
    return gpus


def estimate_run(config: RunConfig, workspace, gpu: GpuInfo | None,
                 reference_if_other_family: bool = False, cuda: bool = True) -> MemoryEstimate:
    """The estimate for the config's own model; a UserError says why when its config.json is not at hand.
    With `reference_if_other_family`, a model of another family than the preset's (e.g. the default
    SmolLM2 under a Qwen preset) is replaced by the family's reference model, named in `estimate.model`."""
    from workbench.core.family import FAMILIES, model_config_json

    spec = config.model.name_or_path
    model_config = model_config_json(spec, workspace)
    if model_config is None:
        raise UserError(f"model.name_or_path {spec!r}: its config.json is not available offline, so no estimate "
                        "(give a local model directory)")
    model_family = family_of_config(model_config)
    if config.family and model_family is not None and model_family.name != config.family:
        if not reference_if_other_family:
            raise UserError(f"model.name_or_path {spec!r} is a {model_family.name} model but the preset is for "
                            f"{config.family}: set a {config.family} model for an estimate")
        spec = FAMILIES[config.family].reference_model
        model_config = model_config_json(spec, workspace)
    estimate = estimate_memory(config, shape_from_config(model_config), gpu, cuda=cuda)
    estimate.model = spec
    return estimate
