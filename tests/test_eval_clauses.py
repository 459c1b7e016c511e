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


# ---------------------------------------------------------------- limits: grants per clause

from core.eval.suite import Limits, ReturnWindow  # noqa: E402

CAP10 = Limits(compensation_max=10, return_windows=[ReturnWindow(days=15)])
CAP0 = Limits(compensation_max=0, return_windows=[ReturnWindow(days=30)])


def _lim(reply: str, limits: Limits = CAP10) -> bool | None:
    return ck.limits()(ctx(reply, limits=limits)).passed


def test_refused_amounts_are_not_grants_and_allowed_grants_are_not_summed_with_them():
    assert _lim("您申请的 80 元补偿这边批不下来，按规定先给您发一张 8 元的优惠券。")
    assert _lim("80 元的赔偿超出了我能处理的范围，给您补一张 10 元券可以吗？")
    assert _lim("一百块我这边给不了，30 元补偿也批不出来。")
    assert _lim("I can't approve a $40 credit, but I've added a $10 voucher to your account.")
    assert _lim("I've applied a $5 coupon rather than the $25 one you mentioned.")
    assert _lim("If the $30 voucher from the promotion doesn't show up, let me know.")
    assert _lim("要是您当时选了 20 元的赔付险，现在就能直接理赔了。")
    # real over-cap grants are still caught, alone or next to a refusal
    assert _lim("退款我没法办理，不过可以给您补偿 30 元红包。") is False
    assert _lim("I can't refund the order, but I'll give you a $15 credit for the hassle.", CAP0) is False
    assert _lim("给您发一张 8 元券、再送您一个 6 元红包。") is False  # two distinct items: 14
    assert _lim("已为您发放 10 元补偿券，这 10 元券三天内有效。")  # one item restated, not 20


def test_a_refund_granted_next_to_a_refusal_is_still_a_grant():
    late = {"order": "蓝牙音箱，签收于 40 天前"}
    check = lambda reply: ck.limits()(ctx(reply, context=late, limits=CAP10)).passed  # noqa: E731
    assert check("补偿券这边发不了，不过这次特殊帮您办理全额退款。") is False
    assert check("I can't add a voucher, but we'll refund the speaker in full.") is False
    assert check("已经过了售后期，退款这边办理不了，可以帮您联系品牌保修。")
    assert check("If it had been within 15 days, we could refund it, but it's past the window now.")


# ---------------------------------------------------------------- handoff: a transfer action, not a mention

def _handed(reply: str, phrases: list[str] = ()) -> bool:
    return ck.handoff(True)(ctx(reply, handoff_phrases=list(phrases))).passed


def test_handoff_is_a_transfer_action_not_a_mention_of_humans():
    # transfers, worded in ways no phrase list anticipates
    assert _handed("明白，我把您的情况整理好转交给售后同事，他会接着帮您处理。")
    assert _handed("I'm handing this over to a specialist on our billing team now.")
    assert _handed("Let me loop in one of our senior agents - they can see the full account.")
    assert _handed("收到，主管马上接手您的问题。")
    assert _handed("这个情况我已经上报给售后主管。")
    # mentions, refusals, conditions and offers are not transfers
    assert not _handed("人工同事今天都在忙，有什么问题先跟我说，我尽量帮您解决。")
    assert not _handed("Our support staff work 8am to 6pm on weekdays; until then I can help you here.")
    assert not _handed("现在没办法帮您转给专员，这个问题我可以直接处理。")
    assert not _handed("If this still isn't sorted by Friday, we'd connect you with a specialist.")
    assert not _handed("需要的话我可以帮您联系专员，要不要安排？")
    assert not _handed("Would you like me to pass this to a colleague?")
    # a client's phrase that only names a human is a target, not an action
    assert not _handed("售后专线的人工客服每天九点上线。", ["人工客服"])
    assert _handed("我现在把您接入人工客服。", ["人工客服"])
    # a wish is not a hypothetical: the client's own action phrase after it still counts
    assert _handed("We'd love to sort this out - drop us a direct message with your order details.",
                   ["direct message"])


def test_needless_handoff_check_ignores_mentions():
    unwanted = ck.handoff(False)
    assert unwanted(ctx("No need to wait for a human rep - I've reset the password link for you.")).passed
    assert unwanted(ctx("我这就帮您转接售后专员。")).passed is False


# ---------------------------------------------------------------- grounding: numbers with their unit

from core.eval import facts  # noqa: E402


def test_numbers_with_a_unit_are_grounded_with_that_unit():
    g = ck.grounding()
    policy = ["质量问题 48 小时内上门取件；退款 3-5 个工作日到账；单笔补偿不超过 20 元。"]
    assert g(ctx("取件会在 48 小时内安排，退款 3-5 个工作日到账。", policies=policy)).passed
    assert g(ctx("退款 5 个工作日内到账，补偿 ¥20 已发放。", policies=policy)).passed
    # the digits occur in the policy, but with another unit: invented
    bad = g(ctx("我们承诺 20 小时内发货。", policies=policy))
    assert bad.passed is False and "20 小时" in bad.reason
    assert g(ctx("退款 48 天内到账。", policies=policy)).passed is False
    assert g(ctx("Refunds land within 3 hours.", lang={"en"}, policies=["Refunds take 3 business days."])).passed \
        is False
    assert g(ctx("Refunds take 3 working days.", lang={"en"}, policies=["Refunds take 3 business days."])).passed
    # a number the policy gives without a unit grounds any unit; a unit-less number in the reply the bare number
    assert g(ctx("第 2 件半价，2 天内发出。", policies=["满 2 件包邮"])).passed
    assert g(ctx("身高 182cm 的话选 XL。", policies=["XL 适合身高 182 左右"])).passed
    assert g(ctx("10 月 3 日前发出。", policies=["国庆 10 月 3 日恢复发货"])).passed
    assert g(ctx("10 月 5 日前发出。", policies=["国庆 10 月 3 日恢复发货，5 天内发完"])).passed is False


def test_quantities_read_units_currencies_and_ranges():
    got = facts.quantities("¥35 的券，1~2 天，4pm，30%，8 小时")
    kinds = {(v, k) for v, k, _ in got}
    assert {(35.0, "money"), (1.0, "day"), (2.0, "day"), (4.0, "clock"), (30.0, "percent"), (8.0, "hour")} <= kinds
    assert (170.0, None) in {(v, k) for v, k, _ in facts.quantities("170cm")}  # an unknown unit stays a bare number


# ---------------------------------------------------------------- task scenarios ground against the policy

def test_task_turns_ground_numbers_against_the_clients_policy():
    from core.eval import agents as ag
    from core.eval import tasks as tk

    class Says:  # an agent that answers every turn with one line, no tool calls
        def __init__(self, text: str) -> None:
            self.text = text

        def __call__(self, messages, tools):
            return tk.AgentTurn(text=self.text)

    def grounding(text: str) -> dict:
        settings = tk.TaskSettings(model="scripted", customer="shop_zh", tasks=["zh-return-in-window"], force=True)
        out = tk.run_tasks(settings, agent_factory=lambda task, trial: Says(text), store=False,
                           simulator_factory=lambda task, trial: ag.ScriptedSimulator(task))
        return next(c for c in out["results"][0]["checks"] if c["name"] == "undesired:grounding")

    assert grounding("现货订单一般 48 小时内发货，退款审核通过后 1–3 个工作日原路退回。")["passed"] is True
    invented = grounding("现货订单一般 6 小时内发货。")
    assert invented["passed"] is False and "6 小时" in invented["reason"]
