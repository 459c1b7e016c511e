"""Handoff as a clause-level decision: does the reply hand the customer over to a human?

A clause hands off when it carries a transfer action: a transfer verb with a human target
("我把您转给售后同事", "I'll pass you to a colleague from our human team"), a verb that implies
the human itself (转人工, 为您转接, transfer you, put you through, escalate), or a human arriving
now (人工同事马上接入). A clause that only mentions humans ("human agents are busy",
"人工客服的服务时间是 9–22 点") does not, and neither does a negated, conditional or
hypothetical one, nor an offer put as a question ("要不要帮您转人工？", "if you'd like, I can
connect you with an agent").
"""
from __future__ import annotations

import re

from core.eval import text as tx

CLAUSE_SPLIT = re.compile(r"[,，;；。！？!?\n]|(?<=\.)\s|\s[-–—]\s|但是?|不过|可是|\bbut\b|\bhowever\b", re.I)

# a human on the other end (the target of a transfer)
TARGET = re.compile(
    r"人工|真人|客服专员|专员|同事|主管|经理|售后组|专人|坐席|"
    r"\bhumans?\b|\blive (?:agent|person|chat)|\b(?:an?|our|the|one of our) (?:\w+ ){0,2}?(?:agents?|specialists?|"
    r"representatives?|reps?|supervisors?|managers?|colleagues?|teammates?|team members?|staff|advisors?)\b|"
    r"\bcolleagues?\b|\bteammates?\b|\bsupervisor\b|\bmember of (?:our|the) \w*\s?team\b|\breal person\b", re.I)
# verbs that hand over to a target named in the same sentence
VERB = re.compile(
    r"转给|转交|转到|转去|交给|移交|转派|升级给|升级到|上报给|安排|对接|接入|接手|接待|跟进|联系您|回电|致电|处理您|来处理|"
    r"\bpass(?:ing)?\b|\bhand(?:ing)? (?:you|this|it|your \w+) (?:over|off)|\bhand(?:ing)? (?:over|off)|"
    r"\bconnect(?:ing)?\b|\bloop(?:ing)? in\b|\bbring(?:ing)? in\b|\brout(?:e|ing)\b|\bforward(?:ing)?\b|"
    r"\b(?:reach|reaching) out\b|\bcontact you\b|\bcall you\b|\bget back to you\b|\btake (?:it|this) (?:over|from here)|"
    r"\btaking (?:it|this) (?:over|from here)|\bpick (?:this|it) up\b|\bbe with you\b|\bjoin(?:ing)? (?:the|this) chat\b",
    re.I)
# verbs whose target is a human by themselves
SELF_TARGETED = re.compile(r"转人工|转接|\btransfer(?:ring|red)? (?:you|this|your \w+)\b|\bput(?:ting)? you through\b|"
                           r"\bescalat(?:e|ed|ing)\b", re.I)
IMMEDIATE_ZH = re.compile(r"马上|立刻|立即|这就")
# the humans' state or hours: a mention, not a transfer happening now
STATE = re.compile(r"忙|下班|休息|不在线|排满|时间是|时间为|上班时间|工作时间|服务时间|\bbusy\b|\boffline\b|\bunavailable\b|"
                   r"\bhours\b|\bclosed\b|\baway\b", re.I)
CONDITIONAL = re.compile(r"如果|假如|要是|若是|万一|除非|的话|\bif\b|\bunless\b|\bwhenever\b|\bonce\b|\bin case\b", re.I)
# hypothetical modals ("we'd connect you", "could transfer"); "we'd like to / be happy to" is not one
MODAL = re.compile(r"(?:\bwould|\bcould|\b(?:we|i|they|you)'d)(?! (?:like|love|be (?:happy|glad)))\b", re.I)
OFFER = re.compile(r"要不要|需不需要|需要.{0,12}吗|是否需要|\bwould you like\b|\bdo you want\b|\bshall i\b|\bshould i\b|"
                   r"\bwant me to\b", re.I)
NEG_EN = re.compile(r"\b(?:not|never|no|can'?t|cannot|won'?t|don'?t|unable)\b|n[’']t\b", re.I)


def clauses(text_norm: str) -> list[str]:
    return [c.strip() for c in CLAUSE_SPLIT.split(text_norm) if c and c.strip()]


def _blocked(clause: str, at: int, question: bool) -> bool:
    """Negated, conditional, hypothetical or offered (a question) rather than done."""
    return (question or bool(CONDITIONAL.search(clause)) or bool(MODAL.search(clause)) or bool(OFFER.search(clause)) or tx.negated(clause, at)
            or tx.is_refusal(clause) or bool(NEG_EN.search(clause[:at])))


def _questions(text_norm: str) -> set[str]:
    """Clauses of sentences that end in a question mark."""
    out: set[str] = set()
    for sentence in tx.sentences(text_norm):
        if sentence.rstrip().endswith(("?", "？")):
            out.update(clauses(sentence))
    return out


def transfer(text_norm: str, phrases: list[str] = ()) -> str | None:
    """The transfer action of the (normalised) reply, quoted; None when it only mentions humans.

    `phrases` are a client's own handoff actions ("dm us"); one that names only a human
    ("人工客服") counts as a target, not as an action."""
    targets = [p for p in phrases if TARGET.fullmatch(tx.normalize(p))]
    actions = [p for p in phrases if p not in targets]
    asked = _questions(text_norm)
    for sentence in tx.sentences(text_norm):
        has_target = bool(TARGET.search(sentence)) or any(tx.find_phrase(sentence, p) for p in targets)
        supposed = False  # "if it isn't sorted by Friday, we connect you": the condition covers the next clause
        for clause in clauses(sentence):
            question = clause in asked or supposed
            supposed = bool(CONDITIONAL.search(clause))
            for pattern in (SELF_TARGETED, VERB if has_target else None, IMMEDIATE_ZH if has_target else None):
                m = pattern.search(clause) if pattern else None
                if not m or (pattern is IMMEDIATE_ZH and not TARGET.search(clause)):
                    continue
                if (pattern is SELF_TARGETED or not STATE.search(clause)) and not _blocked(clause, m.start(), question):
                    return clause[:60]
            for phrase in actions:
                hits = tx.find_phrase(clause, phrase)
                if hits and not _blocked(clause, hits[0], question):
                    return phrase
    return None
