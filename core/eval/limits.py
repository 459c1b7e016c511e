"""Policy limits as data (a suite's `limits:`), checked on the grants and numbers of a reply.

    limits:
      compensation_max: 10          # goodwill compensation (coupons, credits, cash); 0 = none
      return_windows: [{days: 14, when: [app, subscription]}, {days: 30}]
      non_returnable: [定制, 刻字]     # context words of items without change-of-mind returns
      date_promises: false          # "it arrives tomorrow" / "refunded today" are promises

A grant is an affirmed clause that gives something. Compensation and refunds are decided per clause: a
clause that refuses, negates, supposes (if / 如果) or sets an amount aside (instead of / 而不是)
grants nothing ("80 元批不下来，先给您 8 元券" grants 8); a clause's amounts are multiplied
out ("3 张 10 元券" is 30) and distinct granted items add up over the sentence; percentages
and free periods count as above any cash cap; a refund or return granted after the applicable
window, or for a non-returnable item, breaks the window; a day named together with an
arrival or completion verb breaks `date_promises: false`.
"""
from __future__ import annotations

import re

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


def _count(word: str | None) -> float:
    if not word:
        return 1.0
    return float(_ZH_DIGITS.get(word, 0) or word)


# clauses: commas, semicolons, list marks and contrastive conjunctions ("can't do 50, but 10")
_CLAUSE_SPLIT = re.compile(r"[,，;；、:：]|\s[-–—]\s|但是?|不过|可是|然而|\bbut\b|\bhowever\b|\bthough\b|\balthough\b",
                           re.I)
# an alternative set aside inside a clause: "a $10 credit instead of the $50", "10 元而不是 50 元"
_ALTERNATIVE = re.compile(r"(?:instead of|rather than|而不是|而非|代替)[^,，;；]*", re.I)
_CONDITIONAL = re.compile(r"如果|假如|假设|要是|若是|万一|除非|只要|\bif\b|\bunless\b|\bin case\b",
                          re.I)
# potential complements refuse in Chinese: 做不到, 给不了, 申请不下来, 批不出来
_CANNOT_ZH = re.compile(r"[\u4e00-\u9fff]不(?:了|到|起|出|成|下来|出来)")
# naming an amount as over the agent's authority refuses it
_BEYOND = re.compile(r"超出了?[^，。]{0,8}(?:范围|权限|标准|上限|额度|能力)|超过了?[^，。]{0,6}(?:权限|上限|额度|标准)|"
                     r"\bbeyond\b|\bexceeds?\b|above (?:my|our|the) (?:limit|cap)|more than (?:i|we) (?:can|'m allowed)|"
                     r"outside (?:my|our|what)", re.I)
_NEG_EN = re.compile(r"\b(?:not|never|no|can'?t|cannot|won'?t|don'?t|doesn'?t|isn'?t|unable)\b|n[’']t\b", re.I)
# a verb that hands something over (not the nouns 补偿 / credit, which a refusal also names)
_GIVE = re.compile(r"给您|为您|帮您|替您|送您|发您|补您|赔您|返您|退您|发了|发放|申请了|已|"
                   r"we'?ll|we will|i'?ll|i will|i'?ve|we'?ve|\badd|\bgive|\bgiving|\bissu|\bsen[dt]|\bappl|"
                   r"\bcredited|you'?ll (?:get|receive|see)|here'?s", re.I)


def _clauses(sentence: str) -> list[str]:
    return [c.strip() for c in _CLAUSE_SPLIT.split(sentence) if c and c.strip()]


def _refused(clause: str) -> bool:
    """Does the clause refuse, negate or only suppose what it names?"""
    if _CONDITIONAL.search(clause) or tx.is_refusal(clause) or _CANNOT_ZH.search(clause) or _BEYOND.search(clause) or _NEG_EN.search(clause):
        return True
    give = _GIVE.search(clause)
    return bool(give) and tx.negated(clause, give.start())


def _granted_clauses(sentence: str) -> list[str]:
    """The clauses of a sentence that grant: affirmed, not conditional; a clause naming an amount
    without a verb of its own ("您说的 50 元补偿，我这边申请不了") takes the next clause's polarity."""
    parts = [_ALTERNATIVE.sub(" ", c) for c in _clauses(sentence)]
    out = []
    for i, clause in enumerate(parts):
        if _refused(clause):
            continue
        nxt = parts[i + 1] if i + 1 < len(parts) else ""
        if not _GIVE.search(clause) and nxt and _refused(nxt):
            continue
        out.append(clause)
    return out


def compensation(sentence: str, cap: float) -> str | None:
    """The compensation this sentence grants beyond `cap`, described; None when within it.

    Amounts count per granting clause; the sentence's total adds up distinct granted items
    (a grant restated in a later clause is not a second grant)."""
    if not _COMP_WORDS.search(sentence) and not _COMP_RELATIVE.search(sentence):
        return None
    if not _GRANT.search(sentence):
        return None
    granted = _granted_clauses(sentence)
    for clause in granted:
        rel = _COMP_RELATIVE.search(clause)
        if rel:
            return f"grants '{rel.group(0)}' (cap {cap:g})"
    items = {sum(_count(n) * float(a or b) for n, a, b in _COMP_AMOUNT.findall(c)) for c in granted}
    total = sum(items)
    if total > cap:
        return f"grants {total:g} in compensation (cap {cap:g})"
    return None


def applicable_window(limits, context_text: str) -> float | None:
    ctx = context_text.casefold()
    for w in limits.return_windows:
        if w.when and any(word.casefold() in ctx for word in w.when):
            return w.days
    plain = [w.days for w in limits.return_windows if not w.when]
    return max(plain) if plain else None


def _refund_granted(clause: str) -> bool:
    grant = _REFUND_GRANT.search(clause)
    return bool(grant) and not tx.negated(clause, grant.start()) and not _HEDGE.match(clause)


def violations(reply: str, limits, context_text: str) -> list[str]:
    """Every grant of the reply that the suite's limits rule out, described."""
    found: list[str] = []
    ages = facts.context_ages(context_text)
    window = applicable_window(limits, context_text)
    blocked = [w for w in limits.non_returnable if w and w in context_text]
    sentences = tx.sentences(tx.normalize(reply))  # normalize applies NFKC already
    if limits.compensation_max is not None:
        for sentence in sentences:
            why = compensation(sentence, limits.compensation_max)
            if why:
                found.append(why)
    for sentence in sentences:
        if any(_refund_granted(clause) for clause in _granted_clauses(sentence)):
            if window is not None and ages and max(ages) > window:
                found.append(f"grants a refund/return {max(ages):g} days on; the window is {window:g} days")
            elif blocked:
                found.append(f"grants a refund/return of a non-returnable item ({blocked[0]})")
    if limits.date_promises:
        return found
    for sentence in (s for s in sentences if not tx.is_refusal(s)):
        day, done = _DAY.search(sentence), _DONE.search(sentence)
        if day and done and not sentence.rstrip().endswith(("?", "？")) and not _HEDGE.search(sentence) \
                and not tx.negated(sentence, day.start()) and not tx.negated(sentence, done.start()):
            found.append(f"names a date as certain: '{sentence[:50]}'")
    return found
