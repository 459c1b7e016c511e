"""core.dataset: loading, bad-record reports, label cache, stats, figures, customer discovery."""
from __future__ import annotations

import json
import os

import pytest
import torch.utils.data

from core import dataset as dsmod
from core.dataset import BadRecord, Conversation, ConversationDataset, approx_tokens


class CountingDataset(ConversationDataset):
    """Label = share of agent turns; human needed at the first message containing 'human'."""

    calls = 0
    good_threshold = 0.4

    def quality(self, conv: Conversation) -> float:
        type(self).calls += 1
        return sum(m["role"] == "assistant" for m in conv.messages) / len(conv.messages)

    def intervention(self, conv: Conversation) -> int:
        return next((i for i, m in enumerate(conv.messages) if "human" in m["content"]), -1)


def conv(cid, *texts, context=None):
    roles = ["user", "assistant"]
    return {"id": cid, "messages": [{"role": roles[i % 2], "content": t} for i, t in enumerate(texts)],
            "context": context or {}}


def write_jsonl(path, records):
    with open(path, "wb") as fh:
        for rec in records:
            fh.write((rec if isinstance(rec, bytes) else json.dumps(rec, ensure_ascii=False).encode()) + b"\n")
    return path


GOOD = [conv("a", "你好，订单 123 到哪了？", "已为您查询：明天送达。", context={"tools": ["order_lookup"]}),
        conv("b", "hello", "hi", "I want a human", "transferring"),
        conv("c", "只有一句")]


def test_loads_jsonl_into_samples_with_cached_labels(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", GOOD)
    ds = CountingDataset(path)
    assert len(ds) == 3 and ds.errors == []
    sample = ds[0]
    assert sample.dialog[1]["content"] == "已为您查询：明天送达。"
    assert sample.label == 0.5 and sample.human_intervention_idx == -1
    assert sample.context == {"tools": ["order_lookup"]} == ds.get_context(0)
    assert ds[1].human_intervention_idx == 2
    assert isinstance(ds, torch.utils.data.Dataset)
    calls = CountingDataset.calls
    [ds[i] for i in range(3)] + [ds[i] for i in range(3)]
    assert CountingDataset.calls == calls, "labels must not be recomputed on access"


def test_label_cache_survives_reload_and_is_invalidated_by_file_change(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", GOOD)
    CountingDataset(path)
    before = CountingDataset.calls
    again = CountingDataset(path)
    assert CountingDataset.calls == before and len(again) == 3
    write_jsonl(path, GOOD + [conv("d", "x", "y")])
    changed = CountingDataset(path)
    assert len(changed) == 4 and CountingDataset.calls == before + 4


def test_each_bad_record_is_reported_with_file_line_and_reason(tmp_path):
    records = [GOOD[0], b"{not json", conv("r", "x") | {"messages": [{"role": "bot", "content": "x"}]},
               {"id": "e", "messages": []}, {"id": "n", "messages": [{"role": "user", "content": 42}]},
               {"id": "m"}, '{"id": "z", "messages": [{"role": "user", "content": "'.encode() + "编码".encode("gbk") + b'"}]}',
               {"id": "s", "messages": [{"role": "system", "content": "only a system prompt"}]}, GOOD[1]]
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    ds = CountingDataset(path)
    assert [s.id for s in ds] == ["a", "b"]
    reasons = {e.where: e.reason for e in ds.errors}
    assert all(e.file == str(path) for e in ds.errors)
    assert "invalid JSON" in reasons["line 2"]
    assert "unknown role 'bot'" in reasons["line 3"]
    assert "empty conversation" in reasons["line 4"]
    assert "content is a int, expected text" in reasons["line 5"]
    assert "missing field 'messages'" in reasons["line 6"]
    assert "not UTF-8" in reasons["line 7"]
    assert "empty conversation" in reasons["line 8"]
    assert str(ds.errors[0]).startswith(f"{path}:line 2: ")


def test_strict_mode_raises_on_first_bad_record_even_from_cache(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD[0], b"[1,", GOOD[1]])
    assert len(CountingDataset(path).errors) == 1  # fills the cache
    with pytest.raises(BadRecord, match=r"bad\.jsonl:line 2: invalid JSON"):
        CountingDataset(path, strict=True)


def test_json_list_files_and_whole_file_errors(tmp_path):
    good = tmp_path / "list.json"
    good.write_text(json.dumps(GOOD + [{"id": "x"}], ensure_ascii=False), encoding="utf-8")
    ds = CountingDataset(good)
    assert len(ds) == 3 and ds.errors[0].where == "index 3"
    not_list = tmp_path / "obj.json"
    not_list.write_text('{"a": 1}')
    assert "expected a JSON list" in CountingDataset(not_list).errors[0].reason
    gbk = tmp_path / "gbk.json"
    gbk.write_bytes(json.dumps(GOOD, ensure_ascii=False).encode("gbk"))
    assert "not UTF-8" in CountingDataset(gbk).errors[0].reason
    missing = CountingDataset(tmp_path / "nope.jsonl")
    assert len(missing) == 0 and missing.errors[0].reason == "file not found"


def test_large_jsonl_is_read_by_offset_not_kept_in_memory(tmp_path):
    records = [conv(f"c{i}", f"问题 {i}", f"回答 {i}" * (i % 7 + 1)) for i in range(2000)]
    ds = CountingDataset(write_jsonl(tmp_path / "big.jsonl", records))
    assert len(ds) == 2000
    assert ds[1234].dialog[0]["content"] == "问题 1234"
    assert ds[-1].id == "c1999"
    assert not ds._json_records, "jsonl records must not be held in memory"
    with pytest.raises(IndexError, match="out of range"):
        ds[2000]


def test_stats_columns_and_relative_intervention(tmp_path):
    ds = CountingDataset(write_jsonl(tmp_path / "d.jsonl", GOOD))
    df = ds.stats()
    assert list(df["turns"]) == [2, 4, 1]
    assert list(df["agent_turns"]) == [1, 2, 0]
    assert df.loc[1, "intervention_rel"] == pytest.approx(0.5)
    assert df["intervention_rel"].isna().tolist() == [True, False, True]
    assert df.loc[0, "chars"] == len("你好，订单 123 到哪了？") + len("已为您查询：明天送达。")
    assert list(df["good"]) == [True, True, False]
    summary = ds.summary()
    assert summary["conversations"] == 3 and summary["needs_human_share"] == pytest.approx(1 / 3)


def test_approx_tokens_counts_chinese_per_character():
    assert approx_tokens("你好世界") == 4
    assert approx_tokens("abcdefgh") == 2
    assert approx_tokens("订单abcd") == 3


def test_rule_change_invalidates_label_cache(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", GOOD)
    assert CountingDataset(path)[0].label == 0.5

    class Stricter(CountingDataset):
        def quality(self, conv):
            return 0.1

    assert Stricter(path)[0].label == 0.1


def test_editing_a_module_level_rule_invalidates_label_cache(tmp_path, monkeypatch):
    import importlib
    import sys

    source = ("from core.dataset import ConversationDataset\nSCORE = {score}\n"
              "class Rules(ConversationDataset):\n    def quality(self, conv):\n        return SCORE\n")
    path = write_jsonl(tmp_path / "d.jsonl", GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    labels = []
    for n, score in enumerate((0.2, 0.9)):
        (tmp_path / f"rules_mod{n}.py").write_text(source.format(score=score))
        module = importlib.import_module(f"rules_mod{n}")
        labels.append(module.Rules(path)[0].label)
        sys.modules.pop(f"rules_mod{n}")
    assert labels == [0.2, 0.9]


def test_figures_cover_the_distributions_and_export(tmp_path):
    from core.plots import export_html, export_png

    ds = CountingDataset(write_jsonl(tmp_path / "d.jsonl", GOOD))
    figs = dsmod.visualise(ds)
    assert set(figs) == {"turns", "chars", "label", "intervention", "intervention_rel", "label_vs_length"}
    assert list(figs["turns"].data[0].x) == [2, 4, 1]
    assert any(s.x0 == 0.4 for s in figs["label"].layout.shapes), "threshold line drawn"
    html = export_html(figs, tmp_path / "f.html")
    assert html.count("<div") >= 6 and "plotly" in html and (tmp_path / "f.html").exists()
    png = export_png(figs, tmp_path / "f.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_customers_are_discovered_from_their_folders():
    names = [c.name for c in dsmod.list_customers()]
    assert {"shop_zh", "twitter_care"} <= set(names)
    with pytest.raises(dsmod.UnknownName, match="known customers: .*twitter_care"):
        dsmod.get_customer("nope")
    with pytest.raises(dsmod.UnknownName, match="datasets of twitter_care: dev"):
        dsmod.dataset_spec("twitter_care/nope")


def test_cli_check_reports_bad_records(tmp_path, capsys, monkeypatch):
    assert dsmod.main(["check", "nobody/x"]) == 2
    assert "unknown customer 'nobody'" in capsys.readouterr().err


def test_filter_and_jsonl_export_keep_label_and_handoff(tmp_path):
    ds = CountingDataset(write_jsonl(tmp_path / "d.jsonl", GOOD))
    assert dsmod.filter_indices(ds, needs_human=True) == [1]
    assert dsmod.filter_indices(ds, 0.4, 1.0, needs_human=False) == [0]
    assert dsmod.filter_indices(ds, 0.0, 0.1) == [2]
    lines = dsmod.to_jsonl(ds, [0, 1]).decode("utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == ["a", "b"]
    assert records[0]["messages"][0]["content"] == "你好，订单 123 到哪了？" and "\\u" not in lines[0]
    assert records[1]["human_intervention_idx"] == 2 and records[0]["label"] == 0.5
    assert dsmod.to_jsonl(ds, []) == b""
