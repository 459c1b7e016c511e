"""shop_zh customer: label arithmetic, intervention triggers, context, and the shipped demo data."""
from __future__ import annotations

import importlib.util
import json
from collections import Counter

import pytest

from core.dataset import Conversation, get_customer, load_dataset
from core.paths import DATA_DIR
from customers.shop_zh.dataset import ShopZhDataset, first_trigger

DEMO = DATA_DIR / "shop_zh" / "demo.jsonl"


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("CSFORGE_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def rules() -> ShopZhDataset:
    """The rules without loading a file (quality/intervention/context use only the conversation)."""
    return ShopZhDataset.__new__(ShopZhDataset)


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("shop_zh_generate", DATA_DIR / "shop_zh" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def conv(*turns: tuple[str, str], **context) -> Conversation:
    return Conversation(id="t", messages=[{"role": r, "content": c} for r, c in turns], context=context)


# ---- label ------------------------------------------------------------------------------------------
def test_label_components(rules):
    # 10 characters, no result, greeting only: 0.3 × 0.1 = 0.03
    assert rules.quality(conv(("user", "你好"), ("assistant", "您好，请问有"), ("user", "嗯"), ("assistant", "好"))) == 0.03
    # clear purpose (topic word 快递) adds 0.3; 12 + 8 = 20 characters -> 0.06
    assert rules.quality(conv(("user", "我的快递到底什么时候到？"), ("assistant", "请您再等等看哦。"))) == pytest.approx(0.3 + 0.3 * 0.20)
    # a result word in an agent message adds 0.4
    assert rules.quality(conv(("user", "你好"), ("assistant", "已为您处理好了"))) == pytest.approx(0.4 + 0.3 * 0.09)
    # result words in a user message do not count
    assert rules.quality(conv(("user", "你好"), ("user", "建议"), ("assistant", "好的"))) == pytest.approx(0.3 * 0.06)


def test_length_is_capped_and_ignores_tool_output(rules):
    long = "订单" + "很" * 200
    assert rules.quality(conv(("user", long), ("assistant", "建议您稍等"))) == 1.0
    with_tool = conv(("user", "你好"), ("tool", "x" * 500), ("assistant", "好"))
    assert rules.quality(with_tool) == pytest.approx(0.3 * 0.03)


@pytest.mark.parametrize("first, score", [
    ("订单什么时候发货", 1.0),  # topic word
    ("123456789012345678", 1.0),  # order number alone
    ("我的手机13812345678", 0.0),  # an 11-digit phone number is not an order number, no question
    ("能帮我看一下吗？", 0.5),  # a question without a topic
    ("你是机器人吗", 0.5),
    ("在吗？", 0.0),  # a greeting, even with a question mark
    ("你好", 0.0),
    ("随便聊聊", 0.0),
])
def test_clear_purpose_grades(rules, first, score):
    label = rules.quality(conv(("user", first), ("assistant", "")))
    assert label == pytest.approx(0.3 * score + 0.3 * min(1, len(first) / 100), abs=1e-4)


def test_threshold_boundary_is_not_good(rules):
    # full result + full purpose + no length is exactly 0.7: not good (good means > 0.7)
    label = 0.4 + 0.3 * 1 + 0.3 * 0.0
    assert round(label, 4) == 0.7
    c = conv(("user", "退款" + "。" * 98), ("assistant", "结论"))  # 100 + 2 characters: length 1
    assert rules.quality(c) == 1.0
    just = conv(("user", "退款"), ("assistant", "建议"))  # 4 characters
    assert rules.quality(just) == pytest.approx(0.712)
    assert ShopZhDataset.good_threshold == 0.7


# ---- intervention -------------------------------------------------------------------------------------
@pytest.mark.parametrize("turns, expected", [
    ([("user", "订单发货了吗"), ("assistant", "已发货"), ("user", "我要转人工")], (2, "person")),
    ([("user", "人工客服")], (0, "person")),
    ([("user", "质量太差，我要投诉"), ("assistant", "抱歉")], (0, "complaint")),
    ([("user", "你好"), ("assistant", "您好"), ("user", "你们就是骗子")], (2, "complaint")),
    ([("user", "我去12315")], (0, "complaint")),
    ([("user", "能把内部资料发我吗")], (0, "sensitive")),
    ([("user", "退款"), ("assistant", "根据内部备注，您退款太多了")], (1, "sensitive")),  # an agent leak
    ([("user", "退款"), ("assistant", "请提供订单号"), ("user", "？")], (2, "logic_break")),
    ([("user", "退款"), ("assistant", "请提供订单号"), ("user", "啥？")], (2, "logic_break")),
    ([("user", "退款"), ("assistant", "请提供订单号"), ("user", "为什么?")], (2, "logic_break")),
    ([("user", "退款"), ("assistant", "请提供订单号"), ("user", "什么意思")], (2, "logic_break")),
])
def test_each_trigger(rules, turns, expected):
    c = conv(*turns)
    assert first_trigger(c.messages) == expected
    assert rules.intervention(c) == expected[0]


@pytest.mark.parametrize("turns", [
    [("user", "订单什么时候发货"), ("assistant", "已为您查询到，明天发货"), ("user", "好的"), ("assistant", "不客气")],
    [("user", "？")],  # an opening "？" is not a break: the agent has said nothing yet
    [("user", "在吗？"), ("assistant", "您好"), ("user", "多久？")],  # short but a real question
    [("user", "有垃圾袋吗"), ("assistant", "有的")],  # 垃圾袋 is a product, not abuse
    [("user", "你好"), ("assistant", "您好，正在为您转接人工客服，请稍候。")],  # the agent's handoff is no trigger
    [("user", "退款"), ("tool", "内部备注：多次退款"), ("assistant", "已为您提交")],  # tool output is not shown
])
def test_no_trigger(rules, turns):
    assert rules.intervention(conv(*turns)) == -1


def test_first_trigger_wins(rules):
    c = conv(("user", "退款"), ("assistant", "好的"), ("user", "？"), ("assistant", "抱歉"), ("user", "转人工"))
    assert rules.intervention(c) == 2


# ---- context ------------------------------------------------------------------------------------------
def test_context_from_record_and_tool_messages(rules):
    c = Conversation(id="t", messages=[
        {"role": "user", "content": "订单123456789012345678 坏了 [图片] https://img.example.com/a.jpg"},
        {"role": "assistant", "content": "稍等", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "order_lookup", "arguments": "{\"order_no\": \"123456789012345678\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "name": "order_lookup", "content": "{\"status\": \"已签收\"}"},
        {"role": "assistant", "content": "已为您安排补发"},
    ], context={"user": {"vip_level": 3}, "tools": [{"name": "refund", "arguments": {}, "result": {"ok": True}}],
                "images": ["https://img.example.com/b.png"], "scripts": [{"id": "S-SORRY", "text": "抱歉"}]})
    ctx = rules.context(c)
    assert ctx["user"] == {"vip_level": 3}
    assert ctx["tools"] == [{"name": "refund", "arguments": {}, "result": {"ok": True}},
                            {"name": "order_lookup", "arguments": {"order_no": "123456789012345678"},
                             "result": {"status": "已签收"}}]
    assert ctx["images"] == ["https://img.example.com/b.png", "https://img.example.com/a.jpg"]
    assert ctx["scripts"] == [{"id": "S-SORRY", "text": "抱歉"}]
    assert rules.context(conv(("user", "你好"))) == {"tools": [], "user": {}, "images": [], "scripts": []}


# ---- demo data and discovery ----------------------------------------------------------------------------
@pytest.fixture
def demo():
    return load_dataset("shop_zh/demo")


def test_discovered_and_loaded(demo):
    customer = get_customer("shop_zh")
    assert customer.dataset_class is ShopZhDataset
    assert customer.language == "zh" and customer.threshold == 0.7
    assert "0.3 × length" in customer.rules and customer.prompt_path.exists()
    assert "demo" in customer.datasets()
    assert isinstance(demo, ShopZhDataset)
    assert demo.errors == [] and len(demo) >= 300
    sample = demo[0]
    assert sample.dialog and set(sample.context) == {"tools", "user", "images", "scripts"}
    assert demo.get_context(0) == sample.context


def test_demo_spread(demo):
    labels = demo.labels
    good = sum(label > 0.7 for label in labels) / len(labels)
    assert 0.4 <= good <= 0.6, good
    assert min(labels) < 0.3 and max(labels) == 1.0
    kinds = Counter(first_trigger(c.messages)[1] for c in demo.iter_conversations())
    assert {"sensitive", "person", "complaint", "logic_break"} <= set(kinds)
    assert 0.1 <= sum(i >= 0 for i in demo.interventions) / len(demo) <= 0.5
    turns = [len(c.messages) for c in demo.iter_conversations()]
    assert min(turns) == 2 and max(turns) <= 14
    ctx = [demo.get_context(i) for i in range(len(demo))]
    assert sum(bool(c["tools"]) for c in ctx) > 100 and sum(bool(c["images"]) for c in ctx) > 10
    assert sum(bool(c["scripts"]) for c in ctx) > 100 and all(c["user"].get("vip_name") for c in ctx)
    scenarios = Counter(c.meta["scenario"] for c in demo.iter_conversations())
    assert len(scenarios) >= 10


def test_agent_leak_present(demo):
    leaks = [c for c in demo.iter_conversations()
             if (hit := first_trigger(c.messages))[1] == "sensitive" and c.messages[hit[0]]["role"] == "assistant"]
    assert leaks


def test_regeneration_is_byte_identical(generator, tmp_path):
    out = tmp_path / "demo.jsonl"
    generator.main(["--n", "300", "--seed", "7", "--out", str(out)])
    assert out.read_bytes() == DEMO.read_bytes()


def test_generate_is_seeded_and_lazy(generator):
    first = list(generator.generate(50, seed=3))
    assert first == list(generator.generate(50, seed=3))
    assert first != list(generator.generate(50, seed=4))
    assert len({r["id"] for r in first}) == 50
    assert json.loads(json.dumps(first[0], ensure_ascii=False)) == first[0]
    it = generator.generate(10**9, seed=1)  # an iterator: nothing is built up front
    assert next(it)["id"] == "shopzh-1-000000"
