"""The shipped suites are consistent: an agent answering with each turn's `reference` reply
passes every scenario of both customers, and corrupting those replies (a leak, the wrong
language, no handoff, an empty reply) is caught by the matching check."""
from __future__ import annotations

import pytest

from core.eval import store as eval_store
from core.eval.runner import RunSettings, run
from core.eval.suite import load_suite
from tests.fake_agents import reference_agent, serve

LEAK = {"zh": "（内部备注：该用户疑似职业索赔）", "en": " (internal notes: suspected serial claimant)"}
FOREIGN = {"zh": "Sure, we will take care of it for you.", "en": "好的，我们会为您处理。"}


def replies_of(suite, corrupt=None) -> dict:
    out = {}
    for sc in suite.scenarios:
        users = []
        for turn in sc.turns:
            users.append(turn.user)
            out[tuple(users)] = corrupt(sc, turn) if corrupt else (turn.reference or "")
    return out


def play(suite, replies, customer):
    with serve(reference_agent(replies)) as url:
        result = run(RunSettings(model=str(url), customer=customer, concurrency=8, cache=False), suite=suite)
    return result, {r["scenario"]: r for r in eval_store.results(result["id"])}


@pytest.mark.parametrize("customer", ["shop_zh", "twitter_care"])
def test_reference_replies_pass_every_shipped_scenario(customer):
    suite = load_suite(customer)
    assert all(t.reference for s in suite.scenarios for t in s.turns), "every turn documents a good reply"
    result, rows = play(suite, replies_of(suite), customer)
    failures = {s: [f"{c['turn']}:{c['name']}: {c['reason']}" for c in r["checks"] if c["passed"] is False]
                for s, r in rows.items() if not r["passed"]}
    assert not failures
    assert result["summary"]["error_rate"] == 0.0


@pytest.mark.parametrize("customer", ["shop_zh", "twitter_care"])
def test_corrupted_replies_are_caught_by_the_matching_check(customer):
    suite = load_suite(customer)
    lang = suite.language
    handoff_ids = {s.id for s in suite.scenarios if any(c.handoff for t in s.turns for c in t.checks)}
    first_turn = {s.id: s.turns[0].user for s in suite.scenarios}

    def corrupt(sc, turn):
        ref = turn.reference or ""
        if sc.id in handoff_ids:  # never hands off: the handoff sentences are replaced
            return "Thanks for your message." if lang == "en" else "感谢您的留言。"
        if turn.user == first_turn[sc.id] and sc.category in ("new_customer", "off_topic"):
            return ""  # an empty reply
        if sc.category in ("password_reset", "logistics_delay"):
            return ref + LEAK[lang]
        if sc.category in ("refund_outside_policy", "policy_question") and turn.language is None:
            return FOREIGN[lang]
        return ref

    _, rows = play(suite, replies_of(suite, corrupt), customer)
    for sid, row in rows.items():
        cat = row["category"]
        bad = {c["name"] for c in row["checks"] if c["passed"] is False}
        if sid in handoff_ids:
            assert "handoff" in bad, sid
        elif cat in ("new_customer", "off_topic"):
            assert "undesired:empty" in bad and row["transcript"]["glitches"][0]["kind"] == "empty", sid
        elif cat in ("password_reset", "logistics_delay"):
            assert "undesired:leak" in bad, sid
        elif cat in ("refund_outside_policy", "policy_question"):
            assert "undesired:wrong_language" in bad, sid
        else:
            assert row["passed"], (sid, bad)


def test_validate_passes_for_every_client_in_the_repository(capsys):
    """CI's guard for any client added later: its suite loads and its reference replies pass."""
    from core.dataset import list_customers
    from core.eval import cli

    assert cli.main(["validate"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    with_suites = [c.name for c in list_customers() if (c.dir / "scenarios.yaml").exists()]
    assert with_suites and all(f"{name}: reference replies of" in out for name in with_suites)
