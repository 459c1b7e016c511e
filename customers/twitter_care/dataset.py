"""Twitter customer care (24 companies): public support conversations ending in a help-article reply."""
from __future__ import annotations

import re

from core.dataset import Conversation, ConversationDataset

LEADING_HANDLES = re.compile(r"^(\s*[.]?@\w{1,15}[:,]?)+\s*")  # the addressees of a reply tweet
MENTION = re.compile(r"(?<![\w@])@(\w{1,15})\b")  # a mention inside the text keeps its name
URL = re.compile(r"https?://\S+|https?: //\S+")
# The user is frustrated or has asked before: a public bot reply makes it worse.
ESCALATION = re.compile(r"\b(still|again|ridiculous|worst|unacceptable|terrible|useless|speak to (a|an) "
                        r"(human|person|agent)|real person|manager|lawyer|sue)\b|!!", re.I)
# Money or account security: only a human may act, and only in private.
SECURITY = re.compile(r"\b(hack(ed|er)?|stolen|fraud(ulent)?|scam(med)?|charged|refund|unauthori[sz]ed|"
                      r"compromised|identity theft)\b", re.I)
# The agent moves the case to a private channel: the public thread hands off there.
PRIVATE_CHANNEL = re.compile(r"\b(dm|direct message|private message|call us|give us a call)\b", re.I)
EXPLAINED_WORDS = 30  # a reply that says what to do and why, not just a link
CLEAR_PURPOSE_WORDS = 8  # a first message this long usually states device, problem and what was tried


class TwitterCareDataset(ConversationDataset):
    """Public Twitter support threads: a customer's tweets, the agent's replies, and the agent's
    final reply that resolved the case with a link to a support document.

    Cleaning: leading @handles are stripped (they only address the tweet); links are removed from
    the text (shown as "[link]") and kept in the context with the resolving document's id, because
    the agent's knowledge is the linked article, not the URL string. `dialogContent` turns become
    user/assistant messages and the resolving reply (`agentURL.url_utterance`) is the last
    assistant message. Pass `company="AppleSupport"` for one client's conversations.

    Quality (label in [0, 1], good above 0.85):
      0.20 x resolved      the thread ends with the agent's reply pointing to a support document
                           (always true in this data set; 0 for a thread without one)
      0.25 x efficiency    1 / number of agent replies: resolving at the first reply is best, each
                           extra back-and-forth is a cost to the customer
      0.15 x clear purpose the first customer tweet has >= 8 words (device, problem, what was
                           tried); shorter ones score words/8
      0.15 x calm          no customer message shows escalation (see below)
      0.25 x explained     the resolving reply explains in >= 30 words rather than dropping a bare
                           link ("Try this: [link]"); shorter replies score words/30
    Why: every thread here ends resolved, so what tells a good thread from a weak one is how fast
    it got there, whether the request was clear enough to act on, and whether the customer had
    to get angry first. A thread with two agent replies and a frustrated customer is bad.

    Human intervention: the index of the first message where a human must take over; -1 if none.
      - a customer message about money or account security (hacked, stolen, charged, refund, fraud):
        a bot may not act on these in public;
      - a customer message showing escalation (still, again, ridiculous, !!, asks for a person or a
        manager): they have already been failed once;
      - an agent message moving the case to a private channel (DM, call us): on Twitter that is the
        handoff to a human-run channel.
    """

    title = "Twitter customer care (24 companies)"
    language = "en"
    good_threshold = 0.85  # nearly every thread resolves; 'good' means fast, clear and explained
    handoff_message = "I'm passing this to a member of our team; please send us a DM so we can help privately."
    datasets = {
        "dev": {"path": "../shared/data/ibm_twitter_care/dev.json"},
        "apple": {"path": "../shared/data/ibm_twitter_care/dev.json", "company": "AppleSupport"},
        "rockstar": {"path": "../shared/data/ibm_twitter_care/dev.json", "company": "RockstarSupport"},
    }

    def parse(self, record) -> Conversation:
        header, turns, final = record["dialogHeader"], record["dialogContent"], record["agentURL"]
        messages, links = [], []
        for turn in turns + [{"agent": header["company"], **final, "message": final["url_utterance"]}]:
            role = "user" if "client" in turn else "assistant"
            text, found = _clean(turn["message"])
            links += found
            messages.append({"role": role, "content": text})
        context = {"company": header["company"],
                   "links": links,
                   "resolving_document": {"doc_id": final.get("doc_id"), "url": final.get("url")}}
        meta = {"session_id": header.get("sessionID"), "started_at": header.get("conversationDateTime"),
                "duration": header.get("duration"), "company": header["company"]}
        return Conversation(id=header.get("sessionID") or "", messages=messages, context=context, meta=meta)

    def include(self, conv: Conversation) -> bool:
        company = self.options.get("company")
        return company is None or conv.context["company"].lower() == company.lower()

    def quality(self, conv: Conversation) -> float:
        agent_replies = sum(m["role"] == "assistant" for m in conv.messages)
        resolved = 1.0 if conv.context.get("resolving_document", {}).get("url") else 0.0
        first_user = next((m["content"] for m in conv.messages if m["role"] == "user"), "")
        clarity = min(1.0, len(first_user.split()) / CLEAR_PURPOSE_WORDS)
        calm = 0.0 if any(m["role"] == "user" and ESCALATION.search(m["content"]) for m in conv.messages) else 1.0
        final = conv.messages[-1]["content"] if conv.messages[-1]["role"] == "assistant" else ""
        explained = min(1.0, len(final.split()) / EXPLAINED_WORDS)
        return 0.2 * resolved + 0.25 / max(agent_replies, 1) + 0.15 * clarity + 0.15 * calm + 0.25 * explained

    def intervention(self, conv: Conversation) -> int:
        for i, msg in enumerate(conv.messages):
            text = msg["content"]
            if msg["role"] == "user" and (SECURITY.search(text) or ESCALATION.search(text)):
                return i
            if msg["role"] == "assistant" and PRIVATE_CHANNEL.search(text):
                return i
        return -1


def _clean(text: str) -> tuple[str, list[str]]:
    """Strip the leading @handles, un-@ inline mentions, pull links into the context."""
    links = [u.replace(" ", "") for u in URL.findall(text)]
    text = URL.sub("[link]", text)
    text = MENTION.sub(r"\1", LEADING_HANDLES.sub("", text))
    return re.sub(r"\s+", " ", text).strip(), links
