"""Clause-level verdicts: grants per clause (refused / conditional amounts are not granted),
handoff as a transfer action rather than a mention, the Chinese script of a zh suite, and
numbers grounded together with their unit."""
from __future__ import annotations

from core.eval import checks as ck
from core.eval import text as tx

HANDOFF = "好的，马上安排同事接手。"


def ctx(reply: str, user: str = "你好", lang: set | None = None, context: dict | None = None, **env) -> ck.Ctx:
    env.setdefault("policies", ["(a policy without numbers)"])
    e = ck.Env(language="zh", handoff_message=HANDOFF, **env)
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return ck.Ctx(reply, [reply], user, messages, 0.1, e, lang or {"zh"}, [], [], context=context or {})


# ---------------------------------------------------------------- script

def test_traditional_chinese_fails_a_simplified_suite_unless_the_customer_wrote_it():
    wrong = ck.wrong_language()
    assert tx.han_script("這筆退款會在三個工作天內退回您的帳戶。") == "Hant"
    assert tx.han_script("这笔退款会在三个工作日内退回您的账户。") == "Hans"
    assert tx.han_script("好的，您的") is None  # shared characters decide nothing
    assert wrong(ctx("這筆退款會在三個工作天內退回您的帳戶。")).passed is False
    assert wrong(ctx("这笔退款会在三个工作日内退回您的账户。")).passed
    assert wrong(ctx("您好，陈喆先生，订单已为您登记。")).passed  # a rare name character is not Traditional
    # the customer wrote Traditional: answering in it is fine
    assert wrong(ctx("收到，會幫您查詢物流進度。", user="請問我的包裹現在到哪裡了？")).passed
    assert ck.language("zh")(ctx("您的包裹還在運送途中，請再耐心等候。")).passed is False
    assert ck.language("zh")(ctx("您的包裹还在运送途中，请再耐心等候。")).passed
    # an English suite is not concerned with the Chinese script
    assert not tx.wrong_chinese_script("您的包裹還在運送途中。", {"en", "zh-hant"})
