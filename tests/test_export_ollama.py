"""Ollama Modelfile from chat templates of the exported families: per-role wrappers found by example, and
the Go template rendering (our interpreter of the emitted subset) equal to the Jinja rendering."""

import pytest

from workbench.core.errors import UserError
from workbench.core.export import build_modelfile, derive_chat_format, parse_modelfile, render_go_template

GEMMA = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
         "{% endif %}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
         "{% else %}{% set role = message['role'] %}{% endif %}"
         "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
          "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
           "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
           "{{ message['content'] + eos_token }}{% endif %}{% endfor %}")
NUMBERED = "{% for m in messages %}{{ loop.index }}. {{ m['content'] }}\n{% endfor %}"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from workbench.engine.tiny import build_tokenizer

    directory = tmp_path_factory.mktemp("tok")
    build_tokenizer(directory)
    return directory


def chat_renderer(tokenizer_dir, template, bos, eos):
    from workbench.core.data.tokens import ChatTokenizer

    tokenizer = ChatTokenizer(tokenizer_dir, chat_template=template)
    tokenizer.special.update(bos_token=bos, eos_token=eos)
    return tokenizer.render


def smollm2_template():
    import gguf

    from workbench.core.models import alias_gguf_path

    return gguf.GGUFReader(alias_gguf_path("smollm2-135m")).fields["tokenizer.chat_template"].contents()


@pytest.mark.parametrize("name, bos, eos, stops", [  # bos: set when the tokenizer adds it (llama.cpp will too)
    ("smollm2", None, "<|im_end|>", ["<|im_end|>", "<|im_start|>"]),
    ("gemma", "<bos>", "<eos>", ["<end_of_turn>", "<start_of_turn>", "<eos>"]),
    ("llama3", "<|begin_of_text|>", "<|eot_id|>", ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]),
    ("mistral", "<s>", "</s>", ["</s>", "[INST]"]),
])
def test_modelfile_template_renders_like_the_chat_template(tokenizer_dir, name, bos, eos, stops):
    template = {"gemma": GEMMA, "llama3": LLAMA3, "mistral": MISTRAL}.get(name) or smollm2_template()
    render = chat_renderer(tokenizer_dir, template, bos, eos)
    chat = derive_chat_format(render, bos)
    assert chat is not None
    system = "You answer in Korean." if name == "llama3" else None
    modelfile = build_modelfile("m.gguf", chat, system, stops, eos, render)
    assert modelfile.verified, name
    commands = dict(parse_modelfile(modelfile.text))
    assert commands["FROM"] == "./m.gguf" and commands["TEMPLATE"] == modelfile.template
    bos = bos or ""
    assert not bos or bos not in modelfile.template  # llama.cpp adds the BOS when tokenizing; never twice
    conversation = ([{"role": "system", "content": modelfile.system}] if modelfile.system else []) + [
        {"role": "user", "content": "질문 하나"}, {"role": "assistant", "content": "답 하나"},
        {"role": "user", "content": "second question"}]
    expected = render([(m["role"], m["content"]) for m in conversation], True)
    assert bos + render_go_template(modelfile.template, conversation) == (
        expected if expected.startswith(bos) else bos + expected)
    if name == "smollm2":  # its template adds a default system prompt; Ollama gets it as SYSTEM
        assert modelfile.system.startswith("You are a helpful AI assistant named SmolLM")
    if name in ("gemma", "mistral"):  # no separate system turn in these templates
        assert "system" not in chat.roles and modelfile.system is None
    assert set(modelfile.stops) <= set(stops) and eos in modelfile.stops


def test_a_template_that_does_not_split_into_turns_is_refused(tokenizer_dir):
    render = chat_renderer(tokenizer_dir, NUMBERED, None, None)
    with pytest.raises(UserError, match="cannot be written as an Ollama TEMPLATE"):
        build_modelfile("m.gguf", derive_chat_format(render, None), None, [], None, render)


def test_go_template_interpreter_follows_go_semantics_of_the_subset():
    template = ('A{{ range .Messages }}[{{ if eq .Role "user" }}u:{{ .Content }}{{ else if eq .Role "x\\"y" }}q'
                '{{ else }}{{ .Role }}{{ end }}]{{ end }}Z')
    messages = [{"role": "user", "content": "hi"}, {"role": 'x"y', "content": ""}, {"role": "bot", "content": "c"}]
    assert render_go_template(template, messages) == "A[u:hi][q][bot]Z"
    with pytest.raises(ValueError, match="unsupported"):
        render_go_template("{{ .System }}", messages)
    with pytest.raises(ValueError, match="Modelfile"):
        parse_modelfile('TEMPLATE """never closed')
