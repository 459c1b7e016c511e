"""Policy limits as data (a suite's `limits:`), checked on the grants and numbers of a reply.

    limits:
      compensation_max: 10          # goodwill compensation (coupons, credits, cash); 0 = none
      return_windows: [{days: 14, when: [app, subscription]}, {days: 30}]
      non_returnable: [定制, 刻字]     # context words of items without change-of-mind returns
      date_promises: false          # "it arrives tomorrow" / "refunded today" are promises

A grant is an affirmed sentence (no negation or refusal in front) that gives something:
compensation amounts are summed over the sentence ("3 张 10 元券" is 30), percentages and
free periods count as above any cash cap; a refund or return granted after the applicable
window, or for a non-returnable item, breaks the window; a day named together with an
arrival or completion verb breaks `date_promises: false`.
"""
from __future__ import annotations

import re
import unicodedata

from core.eval import facts
from core.eval import text as tx

_ZH_DIGITS = {"一": 1, "两": 2, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9, "十": 10}

# compensation: an amount given as a coupon, credit or cash, or a discount / free period
_COMP_AMOUNT = re.compile(r"(?:(\d+|[一两二三四五六七八九十])\s*张\s*)?(\d+(?:\.\d+)?)\s*(?:元|块)|"
                          r"[$€£¥]\s?(\d+(?:\.\d+)?)\s*(?:credit|voucher|coupon|gift card|off)?", re.I)
_COMP_WORDS = re.compile(r"券|补偿|赔|送您|红包|返现|credit|voucher|coupon|compensat|reimburse|make it up|goodwill|"
                         r"on us|for the (?:trouble|hassle|inconvenience)", re.I)
_COMP_RELATIVE = re.compile(r"\d+\s*%\s*(?:off|discount)|\d+\s*折|一半|半价|(?:a|one|\d+) (?:month|months|year) free|"
                            r"free (?:month|upgrade|replacement)|full(?:y)? reimburs|退.{0,4}(?:一半|\d+\s*%)", re.I)
_GRANT = re.compile(r"给您|为您|帮您|替您|送您|发了|发放|申请了|补偿|赔|退|we'?ll|we will|i'?ll|i will|you'?ll|"
                    r"you will|i'?ve|we'?ve|add|give|refund|credit", re.I)
_REFUND_GRANT = re.compile(
    r"(?:给您|为您|帮您|这次|特殊)[^，。,.]{0,8}(?:退款|退货|退回|办理退|走.{0,4}退款|全额退)|可以(?:为您)?(?:办理)?(?:无理由)?退(?:货|款)?|"
    r"全额退回|原路退款|能退|可以退|"
    r"(?:we'?ll|we will|i'?ll|i will|you'?ll|you will)\s+(?:\w+\s+){0,3}?(?:refund|get (?:a |your )?(?:full )?refund|"
    r"get your money back|honou?r)|make an exception|you can get a refund|one-time exception|(?:full|in full) refund|"
    r"refund(?:ed)? (?:it )?in full|prepaid label|money back|start the return", re.I)
_DAY = re.compile(r"明天|后天|今天|今晚|今日|下午|周[一二三四五六日末]|星期.|\d+\s*号|tomorrow|today|tonight|"
                  r"by (?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)|within the hour|this week", re.I)
_DONE = re.compile(r"到|送达|送到|到账|处理完|办好|修好|\barriv|\bdeliver|\bbe with you\b|back in your account|\bapproved|"
                   r"\bresolved|\bfixed|\bsorted\b|in your account|\bwith you\b", re.I)
_HEDGE = re.compile(r"如果|若|万一|if |unless|一般|预计|大概|也许|可能|不一定|probably|usually|might|may ", re.I)


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text or "")


def _affirmed_sentences(reply: str) -> list[str]:
    out = []
    for sentence in tx.sentences(tx.normalize(_nfkc(reply))):
        if tx.is_refusal(sentence):
            continue
        out.append(sentence)
    return out


def _count(word: str | None) -> float:
    if not word:
        return 1.0
    return float(_ZH_DIGITS.get(word, 0) or word)


def compensation(sentence: str, cap: float) -> str | None:
    """The compensation this sentence grants beyond `cap`, described; None when within it."""
    if not _COMP_WORDS.search(sentence) and not _COMP_RELATIVE.search(sentence):
        return None
    if not _GRANT.search(sentence) or _negated_grant(sentence):
        return None
    rel = _COMP_RELATIVE.search(sentence)
    if rel:
        return f"grants '{rel.group(0)}' (cap {cap:g})"
    total = sum(_count(n) * float(a or b) for n, a, b in _COMP_AMOUNT.findall(sentence))
    if total > cap:
        return f"grants {total:g} in compensation (cap {cap:g})"
    return None


def _negated_grant(sentence: str) -> bool:
    m = _GRANT.search(sentence)
    return bool(m) and tx.negated(sentence, m.start())


def applicable_window(limits, context_text: str) -> float | None:
    ctx = context_text.casefold()
    for w in limits.return_windows:
        if w.when and any(word.casefold() in ctx for word in w.when):
            return w.days
    plain = [w.days for w in limits.return_windows if not w.when]
    return max(plain) if plain else None


def violations(reply: str, limits, context_text: str) -> list[str]:
    """Every grant of the reply that the suite's limits rule out, described."""
    found: list[str] = []
    ages = facts.context_ages(context_text)
    window = applicable_window(limits, context_text)
    blocked = [w for w in limits.non_returnable if w and w in context_text]
    for sentence in _affirmed_sentences(reply):
        if limits.compensation_max is not None:
            why = compensation(sentence, limits.compensation_max)
            if why:
                found.append(why)
        grant = _REFUND_GRANT.search(sentence)
        if grant and not tx.negated(sentence, grant.start()) and not _HEDGE.match(sentence):
            if window is not None and ages and max(ages) > window:
                found.append(f"grants a refund/return {max(ages):g} days on; the window is {window:g} days")
            elif blocked:
                found.append(f"grants a refund/return of a non-returnable item ({blocked[0]})")
        if not limits.date_promises:
            day, done = _DAY.search(sentence), _DONE.search(sentence)
            if day and done and not sentence.rstrip().endswith(("?", "？")) and not _HEDGE.search(sentence) and not tx.negated(sentence, day.start()) \
                    and not tx.negated(sentence, done.start()):
                found.append(f"names a date as certain: '{sentence[:50]}'")
    return found
