"""Export choices and the text files written next to an export — no torch.

- Formats and quantizations, with the one-line refusals the CLI and the TUI give before any model loads.
- The GGUF architectures the converter (engine/gguf_export.py) writes.
- Ollama: the chat template turned into an Ollama (Go text/template) TEMPLATE, found "by example": the
  model's own Jinja template is rendered with marker contents and cut into the per-role wrappers, and the
  Go template is built from those wrappers. `render_go_template` interprets exactly the Go-template subset
  emitted here, so an export checks its own Modelfile against the Jinja template and says whether they
  render the same text.
- SERVING.md (vLLM) and the model card (README.md) of an export.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from workbench.core.errors import UserError

FORMATS = ("adapter", "merged", "gguf")
# Written by our own converter (gguf.quants) without any native code.
PURE_QUANTS = ("f16", "bf16", "q8_0", "f32")
# llama.cpp's quantizer (through llama-cpp-python): name -> LLAMA_FTYPE_MOSTLY_* suffix.
LLAMA_CPP_QUANTS = {
    "q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "q5_1": "Q5_1", "q2_k": "Q2_K", "q3_k_s": "Q3_K_S",
    "q3_k_m": "Q3_K_M", "q3_k_l": "Q3_K_L", "q4_k_s": "Q4_K_S", "q4_k_m": "Q4_K_M", "q5_k_s": "Q5_K_S",
    "q5_k_m": "Q5_K_M", "q6_k": "Q6_K",
}
QUANTS = PURE_QUANTS + tuple(LLAMA_CPP_QUANTS)
# config.json model_type -> llama.cpp architecture (Mistral runs as llama in llama.cpp).
GGUF_ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma": "gemma",
                      "gemma2": "gemma2"}
SUPPORTED_GGUF = "llama, mistral, qwen2, qwen3, gemma, gemma2"


def check_format(fmt: str, quant: str | None, ollama: bool) -> str:
    """The quantization a request uses (f16 by default for GGUF); one line for a bad combination."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: unknown (choose {', '.join(FORMATS)})")
    if fmt != "gguf":
        if quant is not None:
            raise UserError(f"--quant {quant}: only for --format gguf")
        if ollama:
            raise UserError("--ollama: needs --format gguf (Ollama runs GGUF files)")
        return ""
    quant = (quant or "f16").lower()
    if quant not in QUANTS:
        raise UserError(f"--quant {quant}: unknown (choose {', '.join(QUANTS)})")
    if quant in LLAMA_CPP_QUANTS and importlib.util.find_spec("llama_cpp") is None:
        raise UserError(f"--quant {quant}: K-quants and other llama.cpp quantizations need llama.cpp's quantizer: "
                        f"pip install llama-cpp-python (or export --quant f16 and run llama-quantize yourself)")
    return quant


def check_gguf_model(config: dict[str, Any], source: str) -> str:
    """The llama.cpp architecture of a model's config.json; one line naming what is supported otherwise."""
    model_type = str(config.get("model_type") or "?")
    if config.get("is_encoder_decoder"):
        raise UserError(f"{source}: model type {model_type!r} is an encoder-decoder (seq2seq) model; GGUF export "
                        f"supports decoder-only {SUPPORTED_GGUF} (export --format merged instead)")
    if model_type not in GGUF_ARCHITECTURES:
        raise UserError(f"{source}: GGUF export supports {SUPPORTED_GGUF}; model type {model_type!r} is not one "
                        f"of them (export --format merged or adapter instead)")
    return GGUF_ARCHITECTURES[model_type]


def read_model_config(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot read the model config ({error})") from None


# -- Ollama -------------------------------------------------------------------------------------
_MARK = "\u2063{}\u2063"  # invisible separator around a marker: never part of a real template


@dataclass
class ChatFormat:
    """A chat template as per-role wrappers: role prefix + content + role suffix, turn after turn."""

    preamble: str  # before the first message: "" or the BOS token, which llama.cpp's tokenizer adds itself
    roles: dict[str, tuple[str, str]]  # role -> (prefix, suffix); "system" absent when unsupported
    generation_prompt: str
    default_system: str | None = None  # what the template inserts when a conversation has no system message
    notes: list[str] = field(default_factory=list)


def _between(text: str, markers: Sequence[str]) -> list[str] | None:
    """The len(markers)+1 pieces of `text` around the markers, in order; None when they are not in order."""
    pieces, rest = [], text
    for marker in markers:
        head, found, rest = rest.partition(marker)
        if not found:
            return None
        pieces.append(head)
    return pieces + [rest]


def derive_chat_format(render: Callable[[list[tuple[str, str]], bool], str], bos_token: str | None) -> ChatFormat | None:
    """Per-role wrappers of a chat template, from renderings with marker contents; None if it does not fit.
    `bos_token`: the BOS when the tokenizer adds it itself (then a template's leading BOS is left to llama.cpp)."""
    u1, a1, u2, a2, s = (_MARK.format(name) for name in ("U1", "A1", "U2", "A2", "S"))
    turns = [("user", u1), ("assistant", a1), ("user", u2), ("assistant", a2)]
    try:
        full = render(turns, False)
        pieces = _between(full, [u1, a1, u2, a2])
        prompt_without = render(turns[:3], False)
        prompt_with = render(turns[:3], True)
    except Exception:  # noqa: BLE001 - a template that cannot render plain turns has no Ollama form here
        return None
    if pieces is None or not prompt_with.startswith(prompt_without):
        return None
    before_user, user_to_assistant, assistant_to_user, user2_to_assistant, after = pieces
    generation_prompt = prompt_with[len(prompt_without):]
    assistant_suffix = after
    if (user_to_assistant != user2_to_assistant or not assistant_to_user.startswith(assistant_suffix)
            or not user_to_assistant.endswith(generation_prompt)):
        return None
    user_prefix = assistant_to_user[len(assistant_suffix):]
    user_suffix = user_to_assistant[:len(user_to_assistant) - len(generation_prompt)]
    if not before_user.endswith(user_prefix):
        return None
    preamble_and_default = before_user[:len(before_user) - len(user_prefix)]
    preamble = bos_token if bos_token and preamble_and_default.startswith(bos_token) else ""
    roles = {"user": (user_prefix, user_suffix), "assistant": (generation_prompt, assistant_suffix)}
    chat = ChatFormat(preamble, roles, generation_prompt)
    try:
        system_pieces = _between(render([("system", s)] + turns[:2], False), [s, u1, a1])
    except Exception:  # noqa: BLE001 - templates such as Gemma's refuse a system role
        system_pieces = None
    if system_pieces is not None and system_pieces[0].startswith(preamble) and system_pieces[1].endswith(user_prefix):
        system_prefix = system_pieces[0][len(preamble):]
        system_suffix = system_pieces[1][:len(system_pieces[1]) - len(user_prefix)]
        chat.roles["system"] = (system_prefix, system_suffix)
        default = preamble_and_default[len(preamble):]
        if default.startswith(system_prefix) and default.endswith(system_suffix) and default:
            chat.default_system = default[len(system_prefix):len(default) - len(system_suffix)]
        elif default:
            return None
    else:
        chat.notes.append("the chat template has no separate system turn: the Modelfile sets no SYSTEM")
        if preamble_and_default != preamble:
            return None
    return chat


def _go_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def ollama_template(chat: ChatFormat) -> str:
    """The Go template (one line, no trim markers, so every newline of the wrappers stays literal). The
    preamble (a BOS) is left out: llama.cpp adds it when tokenizing, as tokenizer.ggml.add_bos_token says."""
    branches = []
    for role in ("system", "user", "assistant"):
        if role in chat.roles:
            prefix, suffix = chat.roles[role]
            keyword = "if" if not branches else "else if"
            branches.append(f'{{{{ {keyword} eq .Role {_go_string(role)} }}}}{prefix}{{{{ .Content }}}}{suffix}')
    body = "".join(branches) + "{{ end }}"
    return f"{{{{ range .Messages }}}}{body}{{{{ end }}}}{chat.generation_prompt}"


_ACTION = re.compile(r"\{\{(.*?)\}\}", re.S)


def render_go_template(template: str, messages: Sequence[dict[str, str]]) -> str:
    """Render the Go text/template subset `ollama_template` emits: literal text, `range .Messages`,
    `if|else if eq .Role "x"`, `else`, `end`, `.Content`, `.Role`. Anything else raises ValueError."""
    tokens: list[tuple[str, str]] = []
    position = 0
    for match in _ACTION.finditer(template):
        tokens.append(("text", template[position:match.start()]))
        tokens.append(("action", match.group(1).strip()))
        position = match.end()
    tokens.append(("text", template[position:]))

    def block(index: int, stop: tuple[str, ...]) -> tuple[list, int, str]:
        nodes: list = []
        while index < len(tokens):
            kind, value = tokens[index]
            if kind == "text":
                nodes.append(("text", value))
                index += 1
            elif value in stop or any(value.startswith(s + " ") for s in stop if s == "else if"):
                return nodes, index, value
            elif value == "range .Messages":
                body, index, _ = block(index + 1, ("end",))
                nodes.append(("range", body))
                index += 1
            elif value.startswith("if "):
                branches, index = conditional(value[3:], index + 1)
                nodes.append(("if", branches))
            elif value in (".Content", ".Role"):
                nodes.append(("field", value[1:]))
                index += 1
            else:
                raise ValueError(f"unsupported template action {{{{ {value} }}}}")
        return nodes, index, ""

    def conditional(condition: str, index: int) -> tuple[list, int]:
        branches = []
        while True:
            body, index, ended = block(index, ("end", "else", "else if"))
            branches.append((condition, body))
            if ended == "end":
                return branches, index + 1
            if ended == "else":
                condition = "true"
            elif ended.startswith("else if "):
                condition = ended[len("else if "):]
            else:
                raise ValueError("unterminated {{ if }}")
            index += 1

    def holds(condition: str, message: dict[str, str] | None) -> bool:
        if condition == "true":
            return True
        match = re.fullmatch(r'eq \.Role ("(?:[^"\\]|\\.)*")', condition)
        if match is None or message is None:
            raise ValueError(f"unsupported condition {condition!r}")
        return message["role"] == json.loads(match.group(1))

    def run(nodes: list, message: dict[str, str] | None) -> str:
        out = []
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "field":
                if message is None:
                    raise ValueError(f".{node[1]} outside range .Messages")
                out.append(message[node[1].lower()])
            elif node[0] == "range":
                out.extend(run(node[1], item) for item in messages)
            else:
                out.append(next((run(body, message) for condition, body in node[1] if holds(condition, message)), ""))
        return "".join(out)

    nodes, index, ended = block(0, ())
    if ended:
        raise ValueError(f"unexpected {{{{ {ended} }}}}")
    return run(nodes, None)


@dataclass
class Modelfile:
    text: str
    template: str
    system: str | None
    stops: list[str]
    verified: bool  # the template renders what the Jinja chat template renders (see `verify_ollama`)
    notes: list[str]


def _quoted(text: str) -> str:
    if '"""' in text:
        raise UserError('the system prompt contains """, which a Modelfile cannot quote')
    return f'"""{text}"""'


def sampling_parameters() -> dict[str, Any]:
    """The playground's sampling values (core.generation), under Ollama's names."""
    from workbench.core.generation import GenerationParams

    params = GenerationParams()
    return {"temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k,
            "repeat_penalty": params.repetition_penalty, "num_predict": params.max_new_tokens}


def ollama_conversations(system: str | None) -> list[list[dict[str, str]]]:
    """Two-turn conversations the Modelfile is checked with (with the Modelfile's system prompt, if any)."""
    turns = [{"role": "user", "content": "안녕하세요? What is the capital of France?"},
             {"role": "assistant", "content": "The capital of France is Paris.\n파리입니다."},
             {"role": "user", "content": "And of Korea?"}]
    return [[{"role": "system", "content": system}] + turns] if system else [turns]


def build_modelfile(gguf_name: str, chat: ChatFormat | None, run_system: str | None, special_tokens: Sequence[str],
                    eos_token: str | None, render: Callable[[list[tuple[str, str]], bool], str]) -> Modelfile:
    """The Modelfile text; `render` (the Jinja chat template) is what its TEMPLATE is checked against."""
    notes = list(chat.notes) if chat else []
    if chat is None:
        raise UserError("--ollama: the model's chat template does not split into per-role turns, so it cannot be "
                        "written as an Ollama TEMPLATE; set model.chat_template (e.g. ChatML) or export without "
                        "--ollama")
    system = run_system or chat.default_system
    if run_system and "system" not in chat.roles:
        notes.append("the run's system prompt is not in the Modelfile: this chat template has no system turn")
        system = None
    template = ollama_template(chat)
    stops = [t for t in special_tokens if t and (t in chat.roles["assistant"][1] or t in chat.roles["user"][0])]
    if eos_token and eos_token not in stops:
        stops.append(eos_token)
    verified = all(
        render_go_template(template, conversation) == _strip_preamble(
            render([(m["role"], m["content"]) for m in conversation], True), chat.preamble)
        for conversation in ollama_conversations(system))
    lines = [f"FROM ./{gguf_name}",
             f"TEMPLATE {_quoted(template)}"]
    if system:
        lines.append(f"SYSTEM {_quoted(system)}")
    lines += [f"PARAMETER stop {_go_string(stop)}" for stop in stops]
    lines.append("# sampling values of the lora-workbench playground")
    lines += [f"PARAMETER {name} {value}" for name, value in sampling_parameters().items()]
    return Modelfile("\n".join(lines) + "\n", template, system, stops, verified, notes)


def _strip_preamble(text: str, preamble: str) -> str:
    return text[len(preamble):] if preamble and text.startswith(preamble) else text


_MODELFILE_LINE = re.compile(r'^(FROM|TEMPLATE|SYSTEM|PARAMETER|ADAPTER|LICENSE|MESSAGE)\s+(.*)$', re.S)


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(instruction, argument) pairs, with \"\"\"...\"\"\" arguments spanning lines, the way Ollama reads them."""
    commands: list[tuple[str, str]] = []
    index = 0
    while index < len(text):
        end = text.find("\n", index)
        line = text[index:] if end < 0 else text[index:end]
        if not line.strip() or line.lstrip().startswith("#"):
            index = len(text) if end < 0 else end + 1
            continue
        match = _MODELFILE_LINE.match(line)
        if match is None:
            raise ValueError(f"Modelfile: cannot parse line {line!r}")
        instruction, rest_start = match.group(1), index + match.start(2)
        if text.startswith('"""', rest_start):
            close = text.find('"""', rest_start + 3)
            if close < 0:
                raise ValueError(f"Modelfile: unterminated \"\"\" after {instruction}")
            commands.append((instruction, text[rest_start + 3:close]))
            end = text.find("\n", close)
        else:
            commands.append((instruction, match.group(2)))
        index = len(text) if end < 0 else end + 1
    return commands


# -- vLLM, model card -----------------------------------------------------------------------------
def human_size(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


def vllm_rank(rank: int) -> int:
    """The smallest --max-lora-rank value vLLM accepts that holds `rank`."""
    return next((allowed for allowed in (1, 8, 16, 32, 64, 128, 256, 320, 512) if rank <= allowed), rank)


def serving_markdown(base_model: str, adapter_path: str, name: str, rank: int) -> str:
    max_rank = vllm_rank(rank)
    return "\n".join([
        f"# Serving {name} with vLLM",
        "",
        "This adapter directory loads as a LoRA module next to its base model:",
        "",
        "```bash",
        f"vllm serve {base_model} --enable-lora --lora-modules {name}={adapter_path} --max-lora-rank {max_rank}",
        "```",
        "",
        f"Requests for `\"model\": \"{name}\"` (OpenAI-style, http://localhost:8000/v1/chat/completions) use the "
        f"adapter; `{base_model}` answers without it.",
        f"This run's LoRA rank is {rank}; `--max-lora-rank {max_rank}` is the smallest value vLLM accepts that "
        f"holds it. Move the directory? Change the path after `{name}=`.",
        "",
    ])


# Hub ids of the built-in aliases, for the model card's base_model.
_ALIAS_HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def base_model_hub_id(spec: str) -> str | None:
    """The base model as a hub id for the card's metadata; None for a local directory or file."""
    from workbench.core.models import _HUB_ID

    if spec in _ALIAS_HUB_IDS:
        return _ALIAS_HUB_IDS[spec]
    return spec if _HUB_ID.match(spec) and not Path(spec).expanduser().exists() else None


def hub_token() -> str | None:
    """HF_TOKEN, else the token `hf auth login` saved (huggingface_hub.get_token reads both)."""
    from huggingface_hub import get_token

    return os.environ.get("HF_TOKEN") or get_token()


def check_hub_repo(repo: str) -> str:
    """The token for --push-to-hub REPO; one line when the repo id is malformed or no token is found."""
    from workbench.core.models import _HUB_ID

    if not _HUB_ID.match(repo):
        raise UserError(f"--push-to-hub {repo}: not a hub repo id (expected OWNER/NAME)")
    token = hub_token()
    if not token:
        raise UserError(f"--push-to-hub {repo}: no Hugging Face token: set HF_TOKEN or run 'hf auth login' "
                        f"(nothing was exported)")
    return token


def model_card(*, kind: str, base_model: str, base_hub_id: str | None, body: str, run_yaml: str,
               manifest: dict[str, Any] | None, metrics: dict[str, Any] | None, tags: Sequence[str]) -> str:
    """README.md of an export: hub metadata, the description, data manifest, eval metrics, the exact run.yaml."""
    front = ["---"]
    if base_hub_id:
        front.append(f"base_model: {base_hub_id}")
    front.append({"adapter": "library_name: peft", "merged": "library_name: transformers"}.get(kind, "library_name: gguf"))
    front += ["tags:"] + [f"- {tag}" for tag in tags] + ["---", ""]
    lines = front + [body.rstrip(), "", f"Base model: `{base_model}`", ""]
    if metrics:
        lines += ["## Evaluation", "", "| metric | base | fine-tuned |", "| --- | --- | --- |"]
        for key in ("perplexity", "rougeL", "rouge1", "rouge2", "bleu", "exact_match"):
            base_value, tuned_value = (metrics.get("base") or {}).get(key), (metrics.get("tuned") or {}).get(key)
            if isinstance(base_value, (int, float)) and isinstance(tuned_value, (int, float)):
                lines.append(f"| {key} | {base_value:.4f} | {tuned_value:.4f} |")
        lines += ["", f"On the {metrics.get('split')} split, {metrics.get('num_examples')} examples.", ""]
    if manifest is not None:
        lines += ["## Data", "", "The prepared dataset's manifest (the data itself is not included):", "",
                  "```json", json.dumps(manifest, ensure_ascii=False, indent=2), "```", ""]
    lines += ["## Training configuration (run.yaml)", "", "```yaml", run_yaml.rstrip(), "```", ""]
    return "\n".join(lines)
