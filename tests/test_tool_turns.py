"""Tool calls in client conversations become assistant tool-call turns in training examples."""
from __future__ import annotations

import json

from core import training
from core.tool_turns import for_tokenizer, with_tool_turns

LOOKUP = {"name": "order_lookup", "arguments": {"order_no": "202411050001"},
          "result": {"status": "已签收", "signed_days": 3}}


def test_context_calls_go_before_the_reply_that_follows_their_arguments():
    dialog = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "请提供订单号"},
              {"role": "user", "content": "202411050001"}, {"role": "assistant", "content": "已签收 3 天"}]
    out = with_tool_turns(dialog, [LOOKUP, {"name": "handoff", "arguments": {}, "result": "ok"}])
    roles = [(m["role"], bool(m.get("tool_calls"))) for m in out]
    # the argument-less call goes before the first reply; the lookup once the number was given
    assert roles == [("user", False), ("assistant", True), ("tool", False), ("assistant", False), ("user", False),
                     ("assistant", True), ("tool", False), ("assistant", False)]
    call = out[5]["tool_calls"][0]
    assert call["function"]["name"] == "order_lookup" and json.loads(call["function"]["arguments"]) == LOOKUP["arguments"]
    assert out[6]["tool_call_id"] == call["id"] and json.loads(out[6]["content"])["signed_days"] == 3


def test_shop_zh_examples_train_the_calls_and_render_in_the_template_format():
    from core.dataset import load_dataset
    from tests.helpers_llm import build_tokenizer

    ds = load_dataset("shop_zh/demo")
    plain = training.build_examples(ds, threshold=0.7, intervention="cut", handoff_message="转人工", val_fraction=0)
    acting = training.build_examples(ds, threshold=0.7, intervention="cut", handoff_message="转人工", val_fraction=0,
                                     tool_turns=True)
    calls = [(m, w) for e in acting.kept for m, w in zip(e.messages, e.weights) if m.get("tool_calls")]
    results = [w for e in acting.kept for m, w in zip(e.messages, e.weights) if m["role"] == "tool"]
    assert calls and all(w == 1.0 for _, w in calls) and results and not any(results)
    assert not any(m.get("tool_calls") or m["role"] == "tool" for e in plain.kept for m in e.messages)
    with_ctx = next(e for e in acting.kept if e.context.get("tools") and e.messages[0]["role"] == "system")
    assert "tools:" not in with_ctx.messages[0]["content"]  # the calls are turns now, not context text
    assert acting.settings["tool_turns"] is True

    tok = build_tokenizer()  # ChatML without tool support: core.llm's text protocol
    item = training.tokenize(with_ctx, tok, 4096)
    trained = tok.decode([t for t, lab in zip(item["input_ids"], item["labels"]) if lab != -100])
    assert '<tool_call>{"name": "' in trained and "Tool result (" not in trained  # results are context only

    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m.get('tool_calls') %}"
                         "{% for c in m['tool_calls'] %}CALL {{ c['function']['name'] }} {{ c['function']['arguments'] }}"
                         "{% endfor %}{% else %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    assert for_tokenizer(tok, with_ctx.messages) is with_ctx.messages  # the template's own tool format
    item = training.tokenize(with_ctx, tok, 4096)
    trained = tok.decode([t for t, lab in zip(item["input_ids"], item["labels"]) if lab != -100])
    assert "CALL " in trained and "<tool_call>" not in trained
