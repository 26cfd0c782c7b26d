"""How a hint is phrased, beyond what it names: text that tries to instruct the system,
a bin's name framed, quoted or insisted on as the answer, a question back, a hedge.

The hint is data: instructions are cut out before matching (``strip_instructions``), and the
matcher asks instead of answering when a bin's own name is only what the hint insists on.
"""

from __future__ import annotations

import re
import unicodedata

from .analyser import Morpheme, is_function
from .words import FRAMING_WORDS, INSTRUCTION_VERBS

# --- text that tries to instruct the system -------------------------------------------------
# The hint is data. These shapes address the system rather than describe waste; they are cut
# out before matching, so an instruction can never outrank the item, and a hint that is only
# an instruction asks what the item is.
_BIN_WORDS = r"(?:waste|bin|trash|garbage|category|recycling|recyclable|recyclables)"
_INSTRUCTION_PATTERNS = [
    # a role marker and the rest of its sentence: "system: …", "시스템: …", "개발자 모드: …"
    r"(?:^|(?<=[\s<\[({]))/?\s*(?:system|assistant|developer|user|admin|시스템|관리자|어시스턴트"
    r"|개발자|챗봇|인공지능|chatbot|bot|ai|gpt|chatgpt|note\s+to\s+(?:the\s+)?(?:ai|model|bot)"
    r"|(?:개발자|관리자|디버그|테스트|developer|debug|admin)\s*(?:모드|mode))"
    r"\s*[:：>\]][^.\n!?]*",
    # markup the hint could use to pretend to close itself: "</hint>", "[INST]", "<<SYS>>"
    r"</?\s*[a-z_]+\s*/?>|\[/?\s*(?:inst|sys|system|assistant|user)\s*\]|<<\s*/?\s*sys\s*>>",
    # "category=paper", "분류: 일반쓰레기", "답: 종이", "output: paper"
    r"(?:\b|(?<=\s)|^)(?:category|class|label|answer|bin|output|result|분류|카테고리|정답|결과|답|"
    r"출력|응답)\s*[:=]\s*[^\s.,]+(?:\s*(?:으로|로)\s*(?:해|하)\S*)?",
    # "정답은 종이", "분류 결과는 종이", "the answer is paper", "the category is glass"
    r"(?:^|(?<=\s))(?:정답|분류\s*결과|분류|결과|대답|답|출력)\s*(?:은|는|이|가)\s*[^\s.,!?]+",
    r"\b(?:the\s+)?(?:answer|category|class|label|output|result|bin)\s+(?:is|should\s+be|must"
    r"\s+be|=)\s+(?:\"[^\"]*\"|'[^']*'|[a-z_]+)(?:\s+" + _BIN_WORDS + r")?",
    # "ignore previous instructions", "disregard the rules"
    r"\b(?:please\s+)?(?:ignore|disregard|forget|override)\s+(?:all\s+|the\s+|any\s+|your\s+)?"
    r"(?:previous\s+|prior\s+|above\s+|earlier\s+|system\s+)?(?:instructions?|rules?|prompts?"
    r"|messages?|context)\b",
    # "answer paper", "classify it as food", "you must say plastic", "return category paper"
    r"\b(?:(?:you\s+)?(?:must|should|have\s+to|need\s+to)\s+)?(?:answer|respond|reply|say|output"
    r"|return|classify(?:\s+(?:it|this))?\s+as|categori[sz]e(?:\s+(?:it|this))?\s+as|label"
    r"(?:\s+(?:it|this))(?:\s+as)?|mark(?:\s+(?:it|this))?\s+as|call\s+(?:it|this)|tell\s+(?:me|us)"
    r"(?:\s+(?:it'?s|that\s+it'?s|it\s+is))?|put\s+it\s+(?:in|under|as)"
    r"|treat\s+it\s+as|(?:throw|toss|put)\s+(?:it|this)\s+(?:in|into|to))\s+(?:only\s+)?(?:with\s+|as\s+|that\s+it(?:'s|\s+is)\s+)?"
    r"(?:just\s+|only\s+|simply\s+)?(?:the\s+|a\s+)?(?:category\s+)?"
    r"(?:\"[^\"]*\"|'[^']*'|[a-z_]+)(?:\s+" + _BIN_WORDS + r")?",
    # "이전 지시는 무시해", "앞의 내용은 무시하고"
    r"(?:이전|앞|위|모든|기존)\S*\s*(?:지시|명령|지침|규칙|설정|내용|말|프롬프트|대화)\S*\s*"
    r"(?:다\s*)?(?:무시|잊)\S*",
    # "너는 이제부터 …", "지금부터 너는 …": telling the system what it is
    r"(?:^|(?<=\s))(?:너는|넌|당신은|너|AI는|에이아이는)\s+(?:이제부터|지금부터|앞으로)[^.!?\n]*",
    r"(?:이제부터|지금부터)\s+(?:너는|넌|당신은)[^.!?\n]*",
    # "종이라고 답해", "재활용이라고 해줘", "종이라고만 해": a quoted answer and a verb asking it
    r"[^\s.,!?]+\s*(?:이)?라고\s*(?:만\s*)?(?:좀\s*)?(?:답|대답|말|분류|판단|응답|출력|적|써|쓰|하|해)"
    r"[^\s.,!?]*(?:\s*(?:줘|주세요|줘요|주라|라)\b)?",
    # "그렇게 답해", "그대로 분류해"
    r"(?:그렇게|이렇게|그대로)\s*(?:답|대답|분류|말|출력|응답|처리)\S*",
    # "일반쓰레기로 분류할 것", "종이로 해", "음식물로 답해줘": an imperative to classify
    r"[^\s.,!?]+\s*(?:으로|로)\s*(?:분류|처리|답|대답|판단|출력|응답)?\s*"
    r"(?:해라|해\s*줘|해\s*주세요|하세요|할\s*것|하라|해(?=\s*(?:$|[.!,)])))",
    r"[^\s.,!?]+\s*(?:으로|로)\s*(?:분류|대답|답|응답|판단|출력)\s*(?:해|하|할)[^\s.,!?]*",
    # "카테고리를 paper로 설정해", "답을 종이로 바꿔"
    r"[^\s.,!?]+\s*(?:을|를)\s*[^\s.,!?]+\s*(?:으로|로)\s*(?:설정|변경|지정|바꿔|바꾸|고정)\S*",
    # "plastic 출력", "종이를 출력해": a word the system is told to output
    r"[^\s.,!?]+\s*(?:을|를)?\s*(?:출력|답변|응답)(?:해|하|할)?[^\s.,!?]*",
]
_INSTRUCTIONS = re.compile("|".join(f"(?:{p})" for p in _INSTRUCTION_PATTERNS), re.IGNORECASE)
_INSISTING = re.compile(r"(?:무조건|반드시|꼭)\s*$")


def frames(morphemes: list[Morpheme]) -> bool:
    return any(m.form in FRAMING_WORDS or m.lemma in FRAMING_WORDS for m in morphemes)


def asks_back(text: str, morphemes: list[Morpheme]) -> bool:
    """Whether the hint asks for a confirmation or shouts (종이 맞지?, paper, right?,
    PAPER!!!, 100% 종이): beside a bin's own name, that is no description of a thing."""
    if "!!" in text or _EN_ASKING_BACK.search(unicodedata.normalize("NFKC", text).lower()):
        return True
    if re.search(r"100\s*%|[\"'`()\[\]{}<>#→]", text):  # 100% 종이, "종이", (paper): quoted
        return True
    if text.rstrip().endswith("?") and not any(m.lemma in _DISPOSAL_QUESTION for m in morphemes):
        return True  # 종이?, paper?: is it paper? (not "캔 어떻게 버려요?")
        return True
    return any(m.lemma == "맞" and m.tag in {"VA", "VV"} for m in morphemes)


# words of a question about how or where to put it out, not about what it is
_DISPOSAL_QUESTION = frozenset(
    {"어떻", "어떡하", "어디", "언제", "버리", "배출", "처리", "분리", "수거", "how", "where",
     "when", "throw", "dispose", "recycle", "put"}
)  # fmt: skip
_EN_ASKING_BACK = re.compile(r"\b(?:right|correct|isn'?t\s+it|yes\s+or\s+no)\s*\?")


# "X로 된", "X로 만든": made of X, a description; any other verb after "X로" makes X the answer
MADE_OF_VERBS = frozenset({"되", "만들", "만들어지", "이루어지", "제작", "생기", "싸", "포장"})
QUOTATIVES = frozenset({"라고", "이라고", "라구", "이라구", "라니까", "이라니까", "래", "이래"})


def names_an_answer(morphemes: list[Morpheme]) -> bool:
    """Whether a noun is quoted (종이라고, 종이라니까), set as the answer with 로/으로
    (종이로 해, 종이로 치자, 종이 쪽으로 분류) or named as where to put it (종이류에 넣어),
    rather than described (종이로 된)."""
    for k, m in enumerate(morphemes):
        prev = morphemes[k - 1] if k else None
        if (
            m.form in QUOTATIVES
            and m.tag in {"JKQ", "EC", "EF"}
            and prev is not None
            and (prev.is_noun or prev.tag == "VCP")
        ):
            return True
        if (
            m.tag == "JKB"
            and m.form in {"에", "에다", "에다가"}
            and prev is not None
            and (prev.is_noun or prev.tag == "XSN")
            and any(n.lemma == "넣" for n in morphemes[k + 1 : k + 3])
        ):
            return True  # 종이류에 넣어줘: put it in the bin named
        if m.tag == "JKB" and m.form in {"로", "으로"} and prev is not None and prev.is_noun:
            following = [n for n in morphemes[k + 1 :] if not is_function(n)]
            if not following or following[0].lemma not in MADE_OF_VERBS:
                return True
    return False


def asks_for_an_answer(morphemes: list[Morpheme]) -> bool:
    return any(
        m.lemma in INSTRUCTION_VERBS and (m.tag in {"VV", "NNG", "XR"} or m.is_latin)
        for m in morphemes
    )


# Hedges: the writer is not sure what it is ("플라스틱 같은 거", "유리병인가", "maybe glass").
_EN_HEDGES = re.compile(
    r"\b(?:maybe|probably|perhaps|not\s+sure|i\s+think|looks?\s+like|something\s+like|"
    r"kind\s+of|sort\s+of|some\s+kind\s+of|i\s+guess|possibly|might\s+be)\b"
)
# a guess or hearsay after the copula: 종이일걸, 종이겠지, 종이라던데 (not 래: 두부모래 reads as
# 두 + 부모 + 이 + 래)
_GUESSING_ENDINGS = frozenset({"ᆯ걸", "ᆯ걸요", "겠", "라던데", "라더라", "라는데", "라던가"})
_QUESTION_ENDINGS = frozenset({"ᆫ가", "ᆫ가요", "ᆯ까", "ᆯ까요", "ᆫ지", "나", "나요", "가", "지"})


def is_hedged(text: str, morphemes: list[Morpheme]) -> bool:
    """Whether the hint says the writer is unsure what the thing is."""
    if _EN_HEDGES.search(unicodedata.normalize("NFKC", text or "").lower()):
        return True
    for k, m in enumerate(morphemes):
        nxt = morphemes[k + 1] if k + 1 < len(morphemes) else None
        if m.tag == "VA" and m.form in {"같", "비슷하"} and k and morphemes[k - 1].is_noun:
            return True  # 플라스틱 같은 거, 유리 비슷한 것
        if m.tag == "VA" and m.form == "같" and nxt and nxt.tag.startswith("E") and k > 1:
            return True  # 플라스틱인 것 같아요
        if m.tag == "MAG" and m.form in {"아마", "아마도"}:
            return True
        if m.tag == "NNB" and m.form == "듯":
            return True
        if (
            m.tag == "VCP"
            and nxt is not None
            and nxt.tag in {"EF", "EC", "EP"}
            and (nxt.form in _QUESTION_ENDINGS | _GUESSING_ENDINGS)
        ):
            return True  # 플라스틱인가, 유리일까, 종이일걸, 종이겠지, 종이라던데
    return False


def strip_instructions(text: str) -> tuple[str, list[str]]:
    """The hint without text addressed to the system, and what was cut out."""
    text = unicodedata.normalize("NFKC", text or "")
    removed: list[str] = []

    def cut(match: re.Match) -> str:
        if match.group().strip():
            removed.append(match.group().strip())
        return " "

    cleaned = _INSTRUCTIONS.sub(cut, text)
    if removed:
        cleaned = _INSISTING.sub(" ", cleaned)
    return " ".join(cleaned.split()), removed
