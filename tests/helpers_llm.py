"""Test helpers for model access: a tiny random chat model and a scripted OpenAI-compatible agent.

    from tests.helpers_llm import build_tiny_model, FakeAgent, serve_app

`build_tiny_model(folder)` writes a 2-layer LlamaForCausalLM with random weights and a
self-contained byte-level tokenizer (with a chat template): the real transformers code
path, built from a config in seconds, nothing downloaded.
`FakeAgent` is a scripted OpenAI-compatible /v1/chat/completions server on 127.0.0.1
(replies in order, or stalls, or answers 500 / not-JSON) for eval and sandbox tests.
"""
from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any, Iterable

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer() -> Any:
    """A byte-level tokenizer with no merges: 256 byte tokens + 3 specials, any text encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL + sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(folder: Path | str, seed: int = 0, context: int = 2048) -> Path:
    """Save a random 2-layer Llama chat model + tokenizer to `folder` (about a second)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=context, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    # Spread the logits and pin eos at 0, so greedy decoding does not stop early by chance.
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.5)
        model.lm_head.weight[tokenizer.eos_token_id] = 0
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_lora_adapter(base: Path | str, folder: Path | str, seed: int = 1) -> Path:
    """A peft LoRA adapter with non-zero random weights on the tiny model, saved by peft."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"],
                        init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(folder)
    return Path(folder)


# ---------------------------------------------------------------- HTTP servers for tests

class ServerThread:
    """A WSGI app on 127.0.0.1:<free port> in a daemon thread; `with` starts and stops it."""

    def __init__(self, app: Any):
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.server.daemon_threads = True
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_app(app: Any) -> ServerThread:
    return ServerThread(app)


def _completion_body(text: str, model: str, n_in: int) -> dict:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": n_in, "completion_tokens": len(text.split()),
                      "total_tokens": n_in + len(text.split())}}


def _sse(text: str, model: str, n_in: int) -> Iterable[str]:
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model}
    for i, word in enumerate(text.split(" ")):
        piece = word if i == 0 else " " + word
        yield "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {"content": piece},
                                                          "finish_reason": None}]}) + "\n\n"
    usage = _completion_body(text, model, n_in)["usage"]
    yield "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                                 "usage": usage}) + "\n\n"
    yield "data: [DONE]\n\n"


class FakeAgent(ServerThread):
    """Scripted OpenAI-compatible agent. mode: "ok" | "stall" | "500" | "badjson".

    Replies cycle through `replies`; a reply may be a function of the received messages.
    Every request body is kept in `.requests`.
    """

    def __init__(self, replies: Iterable[Any] = ("Hello, how can I help you?",), mode: str = "ok",
                 stall_s: float = 30.0):
        import logging

        from flask import Flask, Response, jsonify, request

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log lines in test output

        self.mode, self.stall_s, self.requests = mode, stall_s, []
        self._replies = itertools.cycle(list(replies))
        app = Flask("fake_agent")

        @app.post("/v1/chat/completions")
        def completions() -> Any:
            body = request.get_json(force=True)
            self.requests.append(body)
            if self.mode == "stall":
                time.sleep(self.stall_s)
            if self.mode == "500":
                return jsonify({"error": {"message": "scripted failure", "type": "server_error"}}), 500
            if self.mode == "badjson":
                return Response("<html>not json</html>", status=200, mimetype="application/json")
            reply = next(self._replies)
            text = reply(body["messages"]) if callable(reply) else str(reply)
            n_in = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
            if body.get("stream"):
                return Response(_sse(text, body.get("model", "fake"), n_in), mimetype="text/event-stream")
            return jsonify(_completion_body(text, body.get("model", "fake"), n_in))

        @app.get("/v1/models")
        def models() -> Any:
            return jsonify({"object": "list", "data": [{"id": "fake", "object": "model"}]})

        super().__init__(app)


# ---------------------------------------------------------------- shared fixtures' building blocks

_TINY: dict[str, Path] = {}


def tiny_model_dir() -> Path:
    """One tiny model (and LoRA adapter beside it) per test process, built on first use."""
    import tempfile

    if "base" not in _TINY:
        root = Path(tempfile.mkdtemp(prefix="csforge-tiny-"))
        _TINY["base"] = build_tiny_model(root / "tiny-llama")
        _TINY["lora"] = build_lora_adapter(_TINY["base"], root / "tiny-lora")
    return _TINY["base"]


def tiny_lora_dir() -> Path:
    tiny_model_dir()
    return _TINY["lora"]


def write_registry(path: Path, entries: list[dict]) -> Path:
    """A registry.yaml for a test (point $CSFORGE_REGISTRY at it)."""
    import yaml

    path.write_text(yaml.safe_dump({"models": entries}, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def tiny_entries() -> list[dict]:
    """Registry entries for the tiny model: a base "tiny" and a LoRA fine-tune "tiny-ft"."""
    return [
        {"name": "tiny", "type": "base", "base_model": str(tiny_model_dir()), "access_point": "local/tiny"},
        {"name": "tiny-ft", "type": "finetune", "base_model": "tiny", "access_point": "local/tiny-ft",
         "adapter_path": str(tiny_lora_dir()), "training": {"method": "lora", "note": "random test adapter"}},
    ]
