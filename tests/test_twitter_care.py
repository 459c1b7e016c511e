"""twitter_care: cleaning, quality and intervention rules on the real IBM Twitter care data."""
from __future__ import annotations

import json

import pytest

from core.dataset import Conversation, get_customer
from customers.twitter_care.dataset import TwitterCareDataset


def record(*turns, company="AppleSupport", url="https://support.example/doc/1"):
    content = [{"client" if role == "u" else "agent": "someone", "message": text, "datetime": "", "tweet_ID": "1"}
               for role, text in turns]
    return {"dialogHeader": {"company": company, "sessionID": "s1", "conversationDateTime": "2020-04-01"},
            "dialogContent": content,
            "agentURL": {"url_utterance": f"@someone Try this: {url}", "url": url, "doc_id": "7"}}


def test_cleaning_strips_handles_keeps_links_as_context(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps([record(("u", "@AppleSupport @Bob my iPhone from @Verizon won't boot https://pic.example/x"))]))
    sample = TwitterCareDataset(path)[0]
    assert sample.dialog[0] == {"role": "user", "content": "my iPhone from Verizon won't boot [link]"}
    assert sample.dialog[-1] == {"role": "assistant", "content": "Try this: [link]"}
    assert sample.context["links"] == ["https://pic.example/x", "https://support.example/doc/1"]
    assert sample.context["resolving_document"]["doc_id"] == "7"


def test_quality_rewards_fast_clear_resolution(tmp_path):
    ds = TwitterCareDataset.__new__(TwitterCareDataset)
    ds.options = {}
    clear = Conversation("a", [{"role": "user", "content": "my laptop will not charge after the latest update"},
                               {"role": "assistant", "content": "see [link]"}],
                         context={"resolving_document": {"url": "u"}})
    slow = Conversation("b", [{"role": "user", "content": "help"}, {"role": "assistant", "content": "what?"},
                              {"role": "user", "content": "it broke"}, {"role": "assistant", "content": "see [link]"}],
                        context={"resolving_document": {"url": "u"}})
    # the final replies are 2 words long: explained = 2/30
    assert ds.quality(clear) == pytest.approx(0.2 + 0.25 + 0.15 + 0.15 + 0.25 * 2 / 30)
    assert ds.quality(slow) == pytest.approx(0.2 + 0.25 / 2 + 0.15 / 8 + 0.15 + 0.25 * 2 / 30)
    slow.messages[2]["content"] = "it STILL broke"
    assert ds.quality(slow) == pytest.approx(0.2 + 0.25 / 2 + 0.15 / 8 + 0.25 * 2 / 30)


@pytest.mark.parametrize("turns, expected", [
    ([("u", "how do I change my wallpaper on this phone")], -1),
    ([("u", "my account was hacked last night")], 0),
    ([("u", "hi"), ("a", "hello"), ("u", "STILL not working!!")], 2),
    ([("u", "app crashes on start every time"), ("a", "Please send us a DM with your details")], 1),
])
def test_intervention_rules(tmp_path, turns, expected):
    path = tmp_path / "t.json"
    path.write_text(json.dumps([record(*turns)]))
    assert TwitterCareDataset(path)[0].human_intervention_idx == expected


def test_real_dev_set_loads_cleanly_and_filters_by_company(twitter_dev):
    ds = TwitterCareDataset(twitter_dev)
    assert len(ds) == 525 and ds.errors == []
    assert not any(m["content"].startswith("@") for s in ds for m in s.dialog)
    assert all(0 <= s.label <= 1 for s in ds)
    summary = ds.summary()
    assert 0.05 < summary["needs_human_share"] < 0.5 and 0.3 < summary["good_share"] < 0.95
    apple = TwitterCareDataset(twitter_dev, company="AppleSupport")
    assert 0 < len(apple) < 525 and apple.skipped == 525 - len(apple)
    assert {s.context["company"] for s in apple} == {"AppleSupport"}


def test_named_per_company_dataset_is_discovered(twitter_dev):
    specs = get_customer("twitter_care").datasets()
    assert specs["apple"].options == {"company": "AppleSupport"} and specs["dev"].available
