"""Facts in a reply, checked against what the agent was given.

grounding      every identifier-like token (order, refund and tracking numbers, codes, phone
               numbers, URLs, e-mails, handles, numbers, amounts, dates) must be traceable to
               the context, the policy or the conversation; an invented one is named. A number
               with a unit or currency is grounded together with its kind (hours, days, money,
               %, dates: "24 小时" needs 24 hours, not any 24), unless the known text gives
               that number without a unit; a unit-less number needs the number.
contradiction  structured context facts that rules can decide: the order's or refund's state
               (not shipped / in transit / out for delivery / delivered; under review /
               refunded), how long ago something happened, the amounts of the order, and
               asking the customer for something the agent already has.
Both work on text in any language the suites use (Chinese and English), with no word lists
tied to one client.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Any, Iterable

from core.eval import text as tx

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
URL = re.compile(r"(?:https?://)?(?:www\.)?(?:[a-z0-9-]+\.)+[a-z]{2,}(?:/[\w\-./%?=&#~]*)?", re.I)
HANDLE = re.compile(r"(?<![\w@])@[a-z_][a-z0-9_]{2,}", re.I)
# letters and digits mixed: SF1402883716520, TK2023..., CS-448213; not 170cm / 4pm / 14th
CODE = re.compile(r"(?<![\w-])(?=[a-z0-9-]*\d)(?=[a-z0-9-]*[a-z])[a-z0-9]+(?:-[a-z0-9]+)*(?![\w-])", re.I)
UNIT_SUFFIX = re.compile(r"^\d+(?:\.\d+)?(?:cm|mm|km|kg|g|ml|l|pm|am|h|hrs?|min|s|st|nd|rd|th|x|k|gb|tb|mb|mah|w|v|"
                         r"d|m|yr|yrs|day|days)$", re.I)
LONG_DIGITS = re.compile(r"\+?\(?\d[\d \-()]{5,}\d")  # phone and tracking numbers written in groups
NUMBER = re.compile(r"\d+(?:\.\d+)?")
ORDINAL = re.compile(r"\b\d{1,2}(?:st|nd|rd|th)\b", re.I)
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
# a month named with a capital (not the verb "may"); "May" itself only before a day number
MONTH = re.compile(r"\b(?:" + "|".join(m.capitalize() for m in MONTHS if m != "may") + r"|May(?= \d))\b")
DATE_MD = re.compile(r"(?<!\d)(\d{1,2})\s*月\s*(\d{1,2})\s*[日号]")
# a number with the unit or currency that says what it counts: "24 小时", "¥59", "3-5 business days"
QUANTITY = re.compile(
    r"(?<![A-Za-z0-9.])(?P<cur>[$¥€£]\s?)?(?P<a>\d+(?:\.\d+)?)"
    r"(?:\s*(?:-|–|—|~|～|到|至|to)\s*(?P<b>\d+(?:\.\d+)?))?\s*"
    r"(?P<unit>个?工作日|个?小时|分钟|个月|天|日|周|星期|年|元|块|%|折|点|号|business days?|working days?|"
    r"hours?|hrs?|h|minutes?|mins?|days?|weeks?|months?|years?|yrs?|percent|dollars?|bucks|yuan|rmb|usd|am|pm)?"
    r"(?(unit)(?![A-Za-z]))", re.I)
UNIT_KINDS = [("hour", r"小时|^h|^hr|^hour"), ("minute", r"分钟|^min"), ("day", r"工作日|天|^日|day"),
              ("week", r"周|星期|^week"), ("month", r"个月|^month"), ("year", r"年|^y"),
              ("money", r"元|块|dollar|buck|yuan|rmb|usd"), ("percent", r"%|percent"), ("discount", r"折"),
              ("clock", r"点|^am|^pm"), ("day_of_month", r"号")]
ID_MIN_DIGITS = 7  # a digit group this long is an identifier (phone, tracking, order), not a quantity


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text or "")


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _unit_kind(unit: str | None, currency: str | None) -> str | None:
    if currency:
        return "money"
    u = (unit or "").casefold()
    return next((kind for kind, pattern in UNIT_KINDS if u and re.search(pattern, u)), None)


def quantities(text: str) -> list[tuple[float, str | None, str]]:
    """(value, unit kind or None, as written) for every number of a text; both ends of a range
    ("1-3 个工作日") take its unit."""
    out = []
    for m in QUANTITY.finditer(text):
        kind = _unit_kind(m.group("unit"), m.group("cur"))
        for part in ("a", "b"):
            if m.group(part):
                out.append((float(m.group(part)), kind, m.group(0).strip()))
    return out


def flatten(value: Any) -> str:
    """Every string and number of a (nested) context as one text."""
    if isinstance(value, dict):
        return "\n".join(f"{k}: {flatten(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "\n".join(flatten(v) for v in value)
    return "" if value is None else str(value)


class Known:
    """What the agent was given, indexed for look-ups: identifiers, digit runs, numbers, words."""

    def __init__(self, texts: Iterable[str]) -> None:
        text = _nfkc("\n".join(t for t in texts if t))
        self.text = text.casefold()
        self.flat = re.sub(r"[\s\-_]", "", self.text)
        self.digit_runs = {_digits(m.group(0)) for m in LONG_DIGITS.finditer(text)} | set(re.findall(r"\d+", text))
        self.numbers = {float(n) for n in NUMBER.findall(text)}
        found = quantities(DATE_MD.sub(" ", text))
        self.quantities = {(v, k) for v, k, _ in found if k}
        self.bare = {v for v, k, _ in found if not k}  # no unit said: any unit may go with it
        self.dates_md = {(int(a), int(b)) for a, b in DATE_MD.findall(text)}
        self.urls = [_url_key(m.group(0)) for m in URL.finditer(EMAIL.sub(" ", text))]

    def has_digits(self, digits: str) -> bool:
        return any(digits in run for run in self.digit_runs if len(run) >= len(digits))

    def has_url(self, url: str) -> bool:
        key = _url_key(url)
        return any(k == key or k.startswith(key + "/") or (("/" not in key) and k.split("/")[0] == key)
                   for k in self.urls)


def _url_key(url: str) -> str:
    u = re.sub(r"^(?:https?://)?(?:www\.)?", "", url.casefold())
    return u.rstrip("/.,;:")


def tokens(reply: str) -> list[tuple[str, str]]:
    """(kind, token) for every identifier-like token of a reply, in order of kind."""
    text = _nfkc(reply)
    found: list[tuple[str, str]] = []

    def take(kind: str, pattern: re.Pattern, keep=lambda s: True) -> None:
        nonlocal text
        for m in pattern.finditer(text):
            if keep(m.group(0)):
                found.append((kind, m.group(0).strip()))
        text = pattern.sub(lambda m: " " if keep(m.group(0)) else m.group(0), text)

    take("email", EMAIL)
    take("url", URL, lambda s: "/" in s or s.casefold().startswith(("http", "www")) or
         bool(re.search(r"\.(?:com|cn|net|org|io|co|uk|de|info|app|shop)\b", s, re.I)))
    take("handle", HANDLE)
    take("code", CODE, lambda s: not UNIT_SUFFIX.match(s))
    take("id", LONG_DIGITS, lambda s: len(_digits(s)) >= ID_MIN_DIGITS)
    take("date", MONTH)
    take("date", ORDINAL)
    take("date_md", DATE_MD)
    found += [("quantity" if kind else "number", written if kind else f"{value:.10g}")
              for value, kind, written in quantities(text)]
    return found


def ungrounded(reply: str, known: Known) -> list[str]:
    """The reply's tokens that nothing the agent was given contains."""
    bad: list[str] = []
    for kind, tok in tokens(reply):
        low = tok.casefold()
        if kind == "email":
            ok = low in known.text
        elif kind == "url":
            ok = known.has_url(tok)
        elif kind in ("handle", "code"):
            ok = re.sub(r"[\s\-_#]", "", low) in known.flat
        elif kind == "id":
            ok = known.has_digits(_digits(tok))
        elif kind == "date":
            ok = re.search(r"\b" + re.escape(low) + r"\b", known.text) is not None
        elif kind == "date_md":
            ok = tuple(int(x) for x in DATE_MD.match(tok).groups()) in known.dates_md
        elif kind == "quantity":  # the number with its unit's kind, or a number the known text gives unit-less
            ok = all((v, k) in known.quantities or v in known.bare for v, k, _ in quantities(tok))
        elif len(_digits(tok)) >= 4:  # "尾号 8273", "order ending 8273": the tail of a known number
            ok = float(tok) in known.numbers or known.has_digits(_digits(tok))
        else:
            ok = float(tok) in known.numbers
        if not ok and tok not in bad:
            bad.append(tok)
    return bad


def known_for(ctx) -> Known:
    """Context, policy and conversation of a check's Ctx (the reply under test left out)."""
    said = [flatten(m.get("content") or "") + "\n" + flatten(m.get("tool_calls") or "") for m in ctx.messages[:-1]]
    env = ctx.env
    return Known([flatten(ctx.context), *env.policies, env.knowledge, *env.undesired.secret_texts, *said, ctx.user])


# ---------------------------------------------------------------- contradiction

# States of an order and of a refund, in the order they happen. The first matching pattern of
# a span wins ("hasn't shipped" is not-shipped, not shipped).
STATES: list[tuple[str, str, int, str]] = [
    ("order", "not_shipped", 0, r"还没(?:有)?(?:发货|发出)|未发货|尚未发货|仓库打包|打包中|还在仓库|hasn'?t shipped|has not shipped|"
                                r"not (?:yet )?shipped|yet to ship|being packed|still being packed|hasn'?t left"),
    ("order", "out_for_delivery", 2, r"派送中|正在派送|out for delivery"),
    ("order", "delivered", 3, r"已签收|签收了|签收于|已送达|was delivered|were delivered|has been delivered|"
                              r"delivered \d+ days? ago"),
    ("order", "in_transit", 1, r"已发货|已经发货|已发出|已经发出|运输途中|在路上|已揽收|转运中心|in transit|"
                               r"(?:has|have|was|were) shipped|shipped \d+ days? ago|on (?:its|the) way"),
    ("refund", "refunded", 1, r"审核通过|已退款|退款成功|已经退款|已原路退回|(?:was|been|got|is) approved|was refunded|"
                              r"been refunded|has gone through|went through|refund was issued"),
    ("refund", "under_review", 0, r"审核中|under review|being reviewed|still reviewing"),
]


def states(text: str) -> dict[str, set[str]]:
    """{'order': {'in_transit'}, ...}: the states a text affirms (negated mentions left out)."""
    norm = tx.normalize(text)
    out: dict[str, set[str]] = {}
    for family, name, _, pattern in STATES:
        for m in re.finditer(pattern, norm):
            if not tx.negated(norm, m.start()):
                out.setdefault(family, set()).add(name)
        norm = re.sub(pattern, lambda m: "_" * len(m.group(0)), norm)
    return out


_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*(小时|天|日|周|个月|months?|weeks?|days?|hours?)\s*(?:前|ago)?", re.I)
_UNIT_DAYS = {"小时": 1 / 24, "hour": 1 / 24, "hours": 1 / 24, "天": 1, "日": 1, "day": 1, "days": 1, "周": 7,
              "week": 7, "weeks": 7, "个月": 30, "month": 30, "months": 30}
_RECENT = re.compile(r"昨天|今天|刚刚|刚到|才一天|一天没|yesterday|earlier today|this morning")
_EVENT = re.compile(r"更新|到达|揽收|转运|物流|签收|scan|update|arrived|moving|hub|delivered|shipped")
_WITHIN_CLAIM = re.compile(r"(?:还在|仍在|在)\s*(\d+)\s*天(?:内|以内|之内)|不到\s*(\d+|一|两)\s*(天|周)|"
                           r"less than (\d+) (days?|weeks?) ago|within the last (\d+) days?", re.I)
_ZH_NUM = {"一": 1, "两": 2}


def context_ages(context_text: str) -> list[float]:
    """Ages in days stated by the context ("签收于 20 天前", "delivered 92 days ago", "80 小时前")."""
    return [float(n) * _UNIT_DAYS[unit.casefold()] for n, unit in _AGE.findall(_nfkc(context_text))
            if unit.casefold() in _UNIT_DAYS]


def _claimed_bound(m: re.Match) -> float | None:
    groups = [g for g in m.groups() if g]
    if not groups:
        return None
    n = _ZH_NUM.get(groups[0], None) or float(groups[0])
    unit = groups[1] if len(groups) > 1 else "天"
    return n * (7 if unit.casefold().startswith(("周", "week")) else 1)


_ASKS = {
    "order number": (r"订单号|order number|which order", r"订单\s*\d{4,}|order\s*#?\d{3,}"),
    "e-mail": (r"邮箱|e-?mail", EMAIL.pattern),
    "phone number": (r"手机号|电话|phone number", r"1\d{10}|\+?\d[\d\s-]{8,}\d"),
}
_ASK_MARK = re.compile(r"[?？]|请提供|麻烦提供|再提供|发给我|发我|告诉我|是多少|could you|can you|please (?:send|share|provide|dm)|"
                       r"what'?s|what is|dm us the", re.I)


def contradictions(reply: str, context_text: str, conversation: str, amounts_known: Known) -> list[str]:
    """Statements of the reply that the structured context rules out, described."""
    found: list[str] = []
    ctx_states = states(context_text)
    for family, said in states(reply).items():
        truth = ctx_states.get(family)
        if truth and not said & truth:
            found.append(f"says the {family} is {'/'.join(sorted(said))}; the context says {'/'.join(sorted(truth))}")
    ages = context_ages(context_text)
    norm = tx.normalize(reply)
    if ages and min(ages) >= 2:
        for sentence in tx.sentences(norm):
            if _RECENT.search(sentence) and _EVENT.search(sentence) and not tx.is_refusal(sentence):
                found.append(f"says it happened recently ('{sentence[:40]}'); the context says {min(ages):g} days ago")
                break
    if ages:
        for m in _WITHIN_CLAIM.finditer(norm):
            bound = _claimed_bound(m)
            if bound is not None and bound < max(ages):
                found.append(f"claims within {bound:g} days; the context says {max(ages):g} days")
    found += _wrong_amounts(reply, context_text, amounts_known)
    found += _asks_for_known(norm, context_text + "\n" + conversation)
    return found


_AMOUNT = re.compile(r"(\d+(?:\.\d+)?)\s*(?:元|块)|[$¥€£]\s?(\d+(?:\.\d+)?)")


def _wrong_amounts(reply: str, context_text: str, known: Known) -> list[str]:
    ctx_amounts = {float(a or b) for a, b in _AMOUNT.findall(_nfkc(context_text))}
    if not ctx_amounts:
        return []
    bad = [a or b for a, b in _AMOUNT.findall(_nfkc(reply)) if float(a or b) not in known.numbers]
    return [f"states an amount the order does not have: {', '.join(bad)} (context: "
            f"{', '.join(f'{x:g}' for x in sorted(ctx_amounts))})"] if bad else []


def _asks_for_known(reply_norm: str, given: str) -> list[str]:
    out = []
    for sentence in tx.sentences(reply_norm):
        if not _ASK_MARK.search(sentence):
            continue
        for what, (noun, present) in _ASKS.items():
            if re.search(noun, sentence, re.I) and re.search(present, _nfkc(given), re.I):
                out.append(f"asks for the {what} it already has")
    return out

