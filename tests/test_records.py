"""Records fail alone: a seeded fuzz of the JSONL loader, and each way one record can break a load.

Every generated line is either a good record (must load, unchanged, and serve as strict JSON)
or a bad one (must be reported with its line number); nothing may stop the load.
"""
from __future__ import annotations

import json
import random
import string

import pytest

from core.dataset import Conversation, ConversationDataset
from core.records import BOM, check_json

ALPHABETS = [string.ascii_letters + " .,!?'\"\\/", "你好订单退款物流发票尺码请问已为您处理谢谢", "ａｂｃ１２３，。！",
             "😀🚚📦𝄞", "é ñ ü ß", "\u2028\u2029\t\x00\x1f"]


def text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(rng.choice(ALPHABETS)) for _ in range(n))


def value(rng: random.Random, depth: int):
    """A random JSON value with finite numbers and valid text, nested up to `depth`."""
    kind = rng.randrange(7 if depth else 5)
    if kind == 0:
        return rng.randint(-10**18, 10**18)
    if kind == 1:
        return rng.uniform(-1e6, 1e6)
    if kind == 2:
        return text(rng, rng.randrange(12))
    if kind == 3:
        return rng.choice([True, False, None])
    if kind == 4:
        return 1e308
    if kind == 5:
        return [value(rng, depth - 1) for _ in range(rng.randrange(4))]
    return {text(rng, rng.randrange(1, 6)): value(rng, depth - 1) for _ in range(rng.randrange(4))}


def nested(depth: int, leaf) -> object:
    out = leaf
    for n in range(depth):
        out = [out] if n % 2 else {"k": out}
    return out


def good_record(rng: random.Random, rid: str) -> dict:
    roles = ["user", "assistant", "tool", "system"]
    messages = [{"role": roles[n % 2] if rng.random() < 0.85 else rng.choice(roles),
                 "content": text(rng, rng.randrange(0, 40))} for n in range(rng.randrange(1, 6))]
    messages[0]["role"] = "user"  # at least one non-system message
    if rng.random() < 0.05:
        messages[-1]["content"] = text(rng, 1) * rng.randrange(200_000, 1_000_000)  # huge string
    context = {"profile": value(rng, rng.randrange(4))}
    if rng.random() < 0.2:
        context["deep"] = nested(rng.randrange(20, 200), "leaf")  # deep, but well inside what JSON readers take
    return {"id": rid, "messages": messages, "context": context, "meta": {"n": rng.random()}}


def encode(rng: random.Random, record: dict) -> bytes:
    return json.dumps(record, ensure_ascii=rng.random() < 0.3).encode("utf-8")


def bad_line(rng: random.Random, rid: str) -> tuple[bytes, str]:
    """(line, what the reason must mention)."""
    base = good_record(rng, rid)
    raw = encode(rng, base)
    kind = rng.randrange(13)
    if kind == 0:
        depth = rng.choice([2_000, 20_000, 100_000])
        return b"[" * depth + b"]" * depth, "nested too deeply"
    if kind == 1:
        return raw[:-1] + b', "context": {"x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}}", "nested too deeply"
    if kind == 2:
        token = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400"])
        return raw[:-1] + b', "context": {"score": ' + token + b"}}", "not a valid JSON number"
    if kind == 3:
        return raw.replace(b'"role": "user", "content": "', b'"role": "user", "content": "\\ud800', 1), "lone surrogate"
    if kind == 4:
        return raw[:-1] + b', "context": {"\\udc80x": 1}}', "lone surrogate"
    if kind == 5:
        return raw.replace(b'"content": "', b'"content": "\xed\xa0\x80', 1), "not UTF-8"
    if kind == 6:
        encoding = rng.choice(["gbk", "utf-16-le", "latin-1"])
        sample = {"gbk": "你好，退款", "utf-16-le": "你好", "latin-1": "café ñ"}[encoding]
        return json.dumps({"id": rid, "messages": [{"role": "user", "content": sample}]},
                          ensure_ascii=False).encode(encoding), "not UTF-8"
    if kind == 7:
        cut = raw.decode("utf-8")  # cut between characters, not inside one's UTF-8 bytes
        return cut[:rng.randrange(1, len(cut) - 1)].encode("utf-8"), "invalid JSON"
    if kind == 8:
        return raw[:-1] + b', "n": ' + b"7" * 5_000 + b"}", "invalid JSON"
    if kind == 9:
        return json.dumps(rng.choice([[1, 2], "text", 42, None])).encode(), "expected an object"
    if kind == 10:
        base["messages"][0]["role"] = rng.choice(["bot", "USER", "", None])
        return encode(rng, base), "unknown role"
    if kind == 11:
        base["messages"] = rng.choice([[], [{"role": "system", "content": "x"}]])
        return encode(rng, base), "empty conversation"
    base["messages"][0]["content"] = rng.choice([42, None, ["parts"], {"text": "x"}])
    return encode(rng, base), "expected text"


def fuzz_file(rng: random.Random, path, n: int) -> tuple[list[dict], dict[int, str]]:
    """Write n lines (good and bad mixed, blank lines, CRLF, a BOM); returns good records and bad line -> reason."""
    lines, good, bad = [], [], {}
    for k in range(n):
        rid = f"r{k}"
        if rng.random() < 0.55:
            record = good_record(rng, rid)
            line, expect = encode(rng, record), None
        else:
            line, expect = bad_line(rng, rid)
            if expect == "not UTF-8" and _is_utf8(line):  # UTF-16 of ASCII is valid UTF-8 with NULs
                expect = "invalid JSON"
        if b"\n" in line:  # a raw newline byte (UTF-16) would split the record: not this test's subject
            continue
        if rng.random() < 0.1:
            lines.append(rng.choice([b"", b"   ", b"\t"]))
        lines.append(line)
        if expect is None:
            good.append(record)
        else:
            bad[len(lines)] = expect
    ends = [rng.choice([b"\n", b"\r\n"]) for _ in lines]
    body = b"".join(line + end for line, end in zip(lines, ends))
    path.write_bytes(BOM + body if rng.random() < 0.5 else body)
    return good, bad


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("seed", range(6))
def test_fuzzed_jsonl_never_loses_a_good_record_and_reports_every_bad_line(tmp_path, seed):
    rng = random.Random(seed)
    path = tmp_path / f"fuzz{seed}.jsonl"
    good, bad = fuzz_file(rng, path, 70)
    for _ in ("cold", "from the label cache"):
        ds = ConversationDataset(path)
        assert ds.ids == [r["id"] for r in good]
        reported = {int(e.where.split()[1]): e.reason for e in ds.errors}
        assert set(reported) == set(bad), f"seed {seed}: wrong bad lines"
        for line, expect in bad.items():
            assert expect in reported[line], (line, reported[line])
            assert len(reported[line]) < 400 and reported[line].encode("utf-8")
        for i, record in enumerate(good):
            sample = ds[i]
            assert sample.dialog == record["messages"] and sample.context == record["context"]
            served = json.dumps({"dialog": sample.dialog, "context": sample.context}, ensure_ascii=False,
                                allow_nan=False)
            assert json.loads(served.encode("utf-8"))["dialog"] == record["messages"]


def test_a_bom_before_the_first_line_keeps_the_record(tmp_path):
    path = tmp_path / "bom.jsonl"
    rec = {"id": "a", "messages": [{"role": "user", "content": "你好"}]}
    path.write_bytes(BOM + json.dumps(rec, ensure_ascii=False).encode() + b"\n" + json.dumps(rec | {"id": "b"}).encode())
    ds = ConversationDataset(path)
    assert ds.errors == [] and ds.ids == ["a", "b"]
    assert ds[0].dialog[0]["content"] == "你好"  # re-read by offset, past the BOM
    listed = tmp_path / "bom.json"
    listed.write_bytes(BOM + json.dumps([rec]).encode())
    assert ConversationDataset(listed).ids == ["a"]


def test_a_json_list_file_too_deep_or_with_nan_fails_alone(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    errors = ConversationDataset(deep).errors
    assert len(errors) == 1 and errors[0].where == "file" and "nested too deeply" in errors[0].reason
    listed = tmp_path / "nan.json"
    good = {"id": "ok", "messages": [{"role": "user", "content": "hi"}]}
    listed.write_text('[{"id": "x", "messages": [{"role": "user", "content": "hi"}], "context": {"s": NaN}}, '
                      + json.dumps(good) + "]")
    ds = ConversationDataset(listed)
    assert ds.ids == ["ok"] and ds.errors[0].where == "index 0" and "conversation.context.s" in ds.errors[0].reason


class Fragile(ConversationDataset):
    """Each hook fails on the records whose meta asks for it, with the exceptions real client code throws."""

    def parse(self, record):
        fail = record.get("meta", {}).get("fail")
        if fail == "parse-index":
            return record["messages"][99]
        if fail == "parse-recursion":
            def down(n):
                return down(n + 1)
            down(0)
        if fail == "parse-type":
            return {"not": "a Conversation"}
        return super().parse(record)

    def include(self, conv):
        return 1 / 0 if conv.meta.get("fail") == "include" else True

    def quality(self, conv):
        fail = conv.meta.get("fail")
        if fail == "quality-zero":
            return len(conv.messages) / 0
        if fail == "quality-nan":
            return float("nan")
        if fail == "quality-none":
            return None
        return 0.5

    def intervention(self, conv):
        fail = conv.meta.get("fail")
        if fail == "intervention-range":
            return 7
        if fail == "intervention-float":
            return 0.5
        return -1

    def context(self, conv):
        fail = conv.meta.get("fail")
        if fail == "context-key":
            return conv.context["missing"]
        if fail == "context-list":
            return ["tools"]
        if fail == "context-datetime":
            import datetime
            return {"at": datetime.date(2026, 1, 1)}
        if fail == "context-nan":
            return {"score": float("inf")}
        return conv.context


FAILURES = {
    "parse-index": "parse() raised IndexError: list index out of range",
    "parse-recursion": "parse() raised RecursionError",
    "parse-type": "parse() returned a dict, expected a Conversation",
    "include": "include() raised ZeroDivisionError",
    "quality-zero": "quality() raised ZeroDivisionError: division by zero",
    "quality-nan": "quality() returned nan, outside [0, 1]",
    "quality-none": "quality() raised TypeError",
    "intervention-range": "intervention() returned 7; expected -1 or a message index 0..1",
    "intervention-float": "intervention() raised TypeError",
    "context-key": "context() raised KeyError: 'missing'",
    "context-list": "context() returned a list, expected an object",
    "context-datetime": "conversation.context.at: a date is not JSON",
    "context-nan": "conversation.context.score: inf is not a valid JSON number",
}


def test_any_exception_in_a_client_hook_becomes_that_records_error(tmp_path):
    def rec(rid, fail=None):
        return {"id": rid, "messages": [{"role": "user", "content": "在吗"}, {"role": "assistant", "content": "在的"}],
                "meta": {"fail": fail} if fail else {}}

    lines = [rec("first")] + [rec(f"bad-{kind}", kind) for kind in FAILURES] + [rec("last")]
    path = tmp_path / "hooks.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in lines) + "\n", encoding="utf-8")
    ds = Fragile(path)
    assert ds.ids == ["first", "last"] and [s.label for s in ds] == [0.5, 0.5]
    reasons = {e.where: e.reason for e in ds.errors}
    for line, expected in enumerate(FAILURES.values(), start=2):
        assert expected in reasons[f"line {line}"], (line, reasons[f"line {line}"])
    assert str(ds.errors[0]) == f"{path}:line 2: {FAILURES['parse-index']}"


def test_check_json_names_the_place_of_the_problem():
    check_json({"a": [1, "ok", {"b": 2.5}]}, "x")
    with pytest.raises(ValueError, match=r"x\.a\[1\]\.b: nan is not a valid JSON number"):
        check_json({"a": [0, {"b": float("nan")}]}, "x")
    with pytest.raises(ValueError, match=r"lone surrogate '\\ud800'"):
        check_json({"a": "ok\ud800"}, "x")
    with pytest.raises(ValueError, match="nested deeper than"):
        check_json(nested(5_000, 1), "x")


def test_reasons_quoting_huge_or_invalid_text_are_cut_and_valid_utf8(tmp_path):
    class Quoting(ConversationDataset):
        def parse(self, record):
            raise ValueError(f"cannot read {record['messages'][0]['content']}")

    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "\ud800" + "x" * 100_000}]}))
    (error,) = Quoting(path).errors
    assert len(error.reason) < 400 and "100,013 characters" in error.reason and "\\ud800" in error.reason
    assert error.reason.encode("utf-8")


def test_conversation_is_the_contract_type():
    conv = Conversation("a", [{"role": "user", "content": "x"}])
    assert conv.context == {} and conv.meta == {}
