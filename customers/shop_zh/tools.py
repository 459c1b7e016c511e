"""shop_zh's tool environment: order and logistics lookup, refunds, reshipping, logistics urging,
compensation coupons and handoff, over customers/shop_zh/state.json (demo data written by us).

The policy's windows and caps (prompt.md) are enforced here, so a promise beyond policy shows
up as a refused call or a state that differs from the gold one, not as a guessed phrase:
  七天无理由   signed at most NO_REASON_DAYS days ago (or not yet signed), unused, and not a
              customised item, underwear, or opened food or cosmetics;
  质量问题     signed at most QUALITY_DAYS days ago, with photos from the customer;
  物流超时     no logistics update for STALLED_HOURS hours (7 days): refund or reship;
  催促物流     allowed once the parcel has had no update for URGE_AFTER_HOURS hours;
  补偿券       at most COUPON_CAP_YUAN yuan, only for a logistics delay (over URGE_AFTER_HOURS)
              or a quality problem (within QUALITY_DAYS), one per order;
  refunds never exceed what was paid minus what was already refunded.
"""
from __future__ import annotations

from typing import Literal

from core.eval.tools import ToolError, tool

STATE_FILE = "state.json"
LANGUAGE = "zh"
GREETING = "您好，请问有什么可以帮您？"
HANDOFF_TOOLS = ("handoff",)
HANDOFF_MESSAGE = "您好，正在为您转接人工客服，请稍候。"
CONFIRM_WRITES = False  # the shop's policy does not ask for an explicit yes before acting
REFUSED_WRITE_FAILS = True  # trying a refund or coupon beyond policy is the over-promise itself

NO_REASON_DAYS = 7
QUALITY_DAYS = 15
URGE_AFTER_HOURS = 72
STALLED_HOURS = 7 * 24
COUPON_CAP_YUAN = 10
NO_REASON_EXCLUDED = ("定制商品", "贴身衣物", "食品", "化妆品")


def policy() -> str:
    from core.llm import policy_text

    return policy_text("shop_zh")


def _order(db, order_no: str) -> dict:
    if order_no not in db["orders"]:
        raise ToolError(f"订单 {order_no} 不存在")
    return db["orders"][order_no]


def _hours_without_update(db, order: dict) -> int:
    track = db["logistics"].view(order.get("tracking_no") or "")
    return track.get("hours_since_update", 0) if isinstance(track, dict) else 0


def _signed_within(order: dict, days: int) -> bool:
    return order["status"] != "已签收" or order.get("signed_days", 0) <= days


# ---------------------------------------------------------------- read

@tool("read")
def order_lookup(db, order_no: str) -> dict:
    """查询订单：状态、签收天数、金额、已退款金额、商品类别、运单号。

    Args:
        order_no: 订单号，12-20 位数字。
    """
    return _order(db, order_no)


@tool("read")
def logistics_tracking(db, tracking_no: str) -> dict:
    """查询物流轨迹：快递公司、最新节点、距上次更新的小时数。

    Args:
        tracking_no: 运单号（在订单信息里）。
    """
    if tracking_no not in db["logistics"]:
        raise ToolError(f"运单 {tracking_no} 不存在")
    return db["logistics"][tracking_no]


# ---------------------------------------------------------------- write

@tool("write")
def refund(db, order_no: str, amount: float, reason: Literal["七天无理由", "质量问题", "物流超时"],
           photos: bool = False) -> dict:
    """按政策为订单退款（原路退回，审核通过后 1–3 个工作日到账）。不符合政策的退款会被拒绝。

    Args:
        order_no: 订单号。
        amount: 退款金额（元），不超过实付金额减去已退金额。
        reason: 退款原因：七天无理由、质量问题（需顾客提供照片）或物流超时（7 天无更新）。
        photos: 顾客是否已提供商品问题照片（质量问题必需）。
    """
    order = _order(db, order_no)
    left = round(order["paid"] - order.get("refunded", 0), 2)
    if amount <= 0 or amount > left:
        raise ToolError(f"退款金额须在 0 到 {left} 元之间")
    if reason == "七天无理由":
        if not _signed_within(order, NO_REASON_DAYS):
            raise ToolError(f"已签收 {order['signed_days']} 天，超过 {NO_REASON_DAYS} 天无理由退货期限")
        if order.get("category") in NO_REASON_EXCLUDED or order.get("used"):
            raise ToolError("该商品不支持无理由退货（定制、贴身衣物、已拆封食品化妆品或已使用）")
    elif reason == "质量问题":
        if not _signed_within(order, QUALITY_DAYS):
            raise ToolError(f"已签收 {order['signed_days']} 天，超过 {QUALITY_DAYS} 天质量问题售后期限")
        if not photos:
            raise ToolError("质量问题需先请顾客提供商品照片")
    elif _hours_without_update(db, order) < STALLED_HOURS:
        raise ToolError("物流 7 天内有更新，不属于物流超时")
    order["refunded"] = round(order.get("refunded", 0) + amount, 2)
    order["status"] = "退款中"
    db["refunds"][order_no] = {"amount": order["refunded"], "reason": reason}
    return {"order_no": order_no, "refunded": order["refunded"], "status": "退款审核中，1–3 个工作日原路退回"}


@tool("write")
def reship(db, order_no: str, photos: bool = False) -> dict:
    """为订单补发商品：质量问题（签收 15 天内、有照片）或物流 7 天无更新时可用。

    Args:
        order_no: 订单号。
        photos: 顾客是否已提供商品问题照片（质量问题必需）。
    """
    order = _order(db, order_no)
    stalled = _hours_without_update(db, order) >= STALLED_HOURS
    quality = order["status"] == "已签收" and order.get("signed_days", 0) <= QUALITY_DAYS and photos
    if not (stalled or quality):
        raise ToolError("不符合补发条件（质量问题需签收 15 天内并提供照片，或物流 7 天无更新）")
    if order.get("reshipped"):
        raise ToolError("该订单已补发过")
    order["reshipped"] = True
    return {"order_no": order_no, "status": "补发单已创建"}


@tool("write")
def logistics_urge(db, order_no: str) -> dict:
    """为物流超过 72 小时未更新的订单登记催促。

    Args:
        order_no: 订单号。
    """
    order = _order(db, order_no)
    hours = _hours_without_update(db, order)
    if hours <= URGE_AFTER_HOURS:
        raise ToolError(f"物流 {hours} 小时前刚更新，72 小时内无需催促")
    db["logistics"][order["tracking_no"]]["urged"] = True
    return {"order_no": order_no, "status": "已登记催促"}


@tool("write")
def issue_coupon(db, order_no: str, amount: int, reason: Literal["物流延误", "质量问题"]) -> dict:
    """发放无门槛补偿券：每单一张，不超过 10 元，仅限物流延误或质量问题。

    Args:
        order_no: 订单号。
        amount: 券面金额（元，整数，最多 10）。
        reason: 发券原因：物流延误（超过 72 小时未更新）或质量问题（签收 15 天内）。
    """
    order = _order(db, order_no)
    if amount <= 0 or amount > COUPON_CAP_YUAN:
        raise ToolError(f"补偿券金额须在 1 到 {COUPON_CAP_YUAN} 元之间")
    if order_no in db["coupons"]:
        raise ToolError("该订单已发过补偿券")
    if reason == "物流延误" and _hours_without_update(db, order) <= URGE_AFTER_HOURS:
        raise ToolError("物流没有延误（72 小时内有更新）")
    if reason == "质量问题" and not (order["status"] == "已签收" and order.get("signed_days", 99) <= QUALITY_DAYS):
        raise ToolError("超出质量问题售后期限")
    db["coupons"][order_no] = {"amount": amount, "reason": reason}
    return {"order_no": order_no, "coupon": f"{amount} 元无门槛券已发放"}


@tool("generic")
def handoff(db, reason: Literal["顾客要求", "投诉", "机密信息", "看不懂"], summary: str) -> str:
    """转人工客服（顾客要求人工、投诉或情绪激动、询问机密信息、连续看不懂时）。

    Args:
        reason: 转人工的原因。
        summary: 给人工客服的问题摘要。
    """
    db["handoffs"]["current"] = {"reason": reason}
    return "已转接人工客服"
