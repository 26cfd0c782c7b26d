"""How a hint is written: morphemes (kiwipiepy), negation, and the language's own word lists.

The matcher (scans.matching) reads a hint the way Korean is written: aliases match on morpheme
boundaries (비니루 is not 비니, 캔들 is not 캔), the head noun of a phrase comes last (건전지 든
리모컨 is a remote control), verbs are compared by their stems (깨져버린 → 깨지) and a removal
verb under 안/못/-지 않 means the opposite (라벨 안 뗀 = the label is still on).

The analyser is Kiwi (kiwipiepy; its model ships inside the wheel): loaded lazily, once per
process, only where the offline matcher runs, ~1 s and ~320 MB resident (the multi-word proper
noun dictionary, ~190 MB more, is not loaded: it names places and works, not household waste),
then well under a millisecond per hint. When it cannot load, ``analyse`` returns None and the
matcher falls back to substring matching, with a warning.

Latin words and numbers are tokenized here, not by Kiwi (which splits unknown English words
into pieces); English plurals are folded to the singular.

Everything below the analyser is about the language, never about particular items: filler,
vague and quantity words, the nouns that name an action rather than a thing, conjunctions,
and the shapes of text that tries to instruct the system.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
import warnings
from dataclasses import dataclass

logger = logging.getLogger(__name__)

_kiwi = None
_kiwi_failed = False
_kiwi_lock = threading.Lock()
_tokenize_lock = threading.Lock()


def get_analyser():
    """The process's Kiwi, loaded on first use; None when it cannot load (warned once)."""
    global _kiwi, _kiwi_failed
    if _kiwi is not None or _kiwi_failed:
        return _kiwi
    with _kiwi_lock:
        if _kiwi is None and not _kiwi_failed:
            try:
                from kiwipiepy import Kiwi

                with warnings.catch_warnings():
                    # num_workers=0: one thread, no pool (a prefork child inherits it safely);
                    # kiwipiepy warns that 0 meant "all cores" before 0.21
                    warnings.simplefilter("ignore", DeprecationWarning)
                    kiwi = Kiwi(num_workers=0, load_multi_dict=False)
                kiwi.tokenize("")  # the model is loaded lazily: load it now
                _kiwi = kiwi
            except Exception:  # a native library: any failure means "not here"
                logger.warning(
                    "kiwipiepy unavailable; matching hints by substrings, without morphemes",
                    exc_info=True,
                )
                _kiwi_failed = True
    return _kiwi


def warm_analyser() -> bool:
    """Load the analyser now (worker start, load_rulebase); True when it is available."""
    return get_analyser() is not None


# --- morphemes ------------------------------------------------------------------------------
@dataclass(slots=True)
class Morpheme:
    form: str  # lowercased surface form (a verb's stem: 깨져 → 깨지)
    tag: str  # Sejong tag without kiwi's -R/-I variants: NNG, VV, JC, SL (Latin), SN, …
    lemma: str  # the form to compare: a stem, or an English word in the singular
    start: int  # position in the compact hint (normalize() without spaces)
    end: int
    word: int  # index of the space-separated word (eojeol) it belongs to
    neg: bool = False  # a predicate negated by 안/못/-지 않, or a noun followed by 없다
    oov: bool = False  # a word the analyser's dictionary does not have (a typo, a new word)

    @property
    def is_noun(self) -> bool:
        return self.tag in NOUN_TAGS

    @property
    def is_predicate(self) -> bool:
        return self.tag in PREDICATE_TAGS

    @property
    def is_latin(self) -> bool:
        return self.tag == "SL"


NOUN_TAGS = frozenset({"NNG", "NNP", "NNB", "NR", "NP", "SL", "SH"})
PREDICATE_TAGS = frozenset({"VV", "VA", "VX", "VCN"})
# tags that carry no content of their own: particles, endings, copula, verb-making suffixes,
# punctuation and symbols
FUNCTION_TAG_PREFIXES = ("J", "E", "S", "Z", "W", "U")
FUNCTION_TAGS = frozenset({"VCP", "XSV", "XSA", "XSM", "IC"})

_LATIN_OR_NUMBER = re.compile(r"[a-z]+(?:'[a-z]+)*|[0-9]+(?:[.][0-9]+)?|[^a-z0-9]+")
_WORD_CHAR = re.compile(r"\w")


def is_function(m: Morpheme) -> bool:
    return m.tag in FUNCTION_TAGS or (m.tag.startswith(FUNCTION_TAG_PREFIXES) and m.tag not in {
        "SL", "SN", "SH"})  # fmt: skip


def singular(word: str) -> str:
    """English plural → singular, the regular cases ("bottles", "batteries", "boxes")."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _compact_map(text: str) -> list[int]:
    """For each character of ``text``, its position in the compact text (word characters
    only, "_" excluded as normalize() does); a non-word character maps to the next one's."""
    positions, k = [], 0
    for ch in text:
        positions.append(k)
        if ch != "_" and _WORD_CHAR.match(ch):
            k += 1
    positions.append(k)
    return positions


def analyse(text: str) -> list[Morpheme] | None:
    """The hint's morphemes with compact positions, or None when no analyser is available."""
    kiwi = get_analyser()
    if kiwi is None:
        return None
    text = unicodedata.normalize("NFKC", text or "").lower()
    cmap = _compact_map(text)
    words = [0] * (len(text) + 1)
    word = 0
    for i, ch in enumerate(text):
        if ch.isspace() and i and not text[i - 1].isspace():
            word += 1
        words[i] = word
    words[len(text)] = word

    def span(start: int, end: int) -> tuple[int, int]:
        return cmap[start], cmap[end]

    out: list[Morpheme] = []
    for chunk in _LATIN_OR_NUMBER.finditer(text):
        piece, offset = chunk.group(), chunk.start()
        if piece[0].isascii() and piece[0].isalpha():
            start, end = span(offset, chunk.end())
            lemma = piece if piece in _LISTED_WORDS else singular(piece)
            out.append(Morpheme(piece, "SL", lemma, start, end, words[offset]))
        elif piece[0].isdigit():
            start, end = span(offset, chunk.end())
            out.append(Morpheme(piece, "SN", piece, start, end, words[offset]))
        elif piece.strip():
            with _tokenize_lock:
                tokens = kiwi.tokenize(piece)
            for tok in tokens:
                tag = tok.tag.split("-")[0]
                begin = offset + tok.start
                start, end = span(begin, begin + tok.len)
                oov = bool(getattr(tok, "oov", False))
                out.append(Morpheme(tok.form, tag, tok.form, start, end, words[begin], oov=oov))
    nouns_read_as_adverbs(out)
    mark_negation(out)
    return out


# 못 is "cannot" and "nail", 안 "not" and "inside": Kiwi reads them as the adverb by default
ADVERB_NOUNS = frozenset({"못", "안"})


def nouns_read_as_adverbs(morphemes: list[Morpheme]) -> None:
    """못 and 안 are the negation adverbs only before a predicate; before a particle, a
    noun or punctuation they are the nouns (못이랑 나사: nails; 못 한 봉지: a bag of nails),
    and so is a 못 that ends the hint."""
    for k, m in enumerate(morphemes):
        if m.tag != "MAG" or m.form not in ADVERB_NOUNS:
            continue
        nxt = morphemes[k + 1] if k + 1 < len(morphemes) else None
        if nxt is None:
            # a hint ending in 안 is cut short after its negation ("분리가 안"); 못 is a nail
            noun = m.form == "못"
        else:
            noun = nxt.tag.startswith(("J", "N", "S")) or nxt.tag == "MM"
            noun = noun and nxt.tag not in {"SL", "SN"}  # 안 USB: before English or a number
        if noun:
            m.tag = "NNG"


NEGATION_ADVERBS = frozenset({"안", "못"})
NEGATING_AUXILIARIES = frozenset({"않", "못하", "말"})
DO_VERBS = frozenset({"하", "되"})


def mark_negation(morphemes: list[Morpheme]) -> None:
    """Flag predicates that are negated: 안/못 before them (안 뗀), -지 않/못하 after them
    (떼지 않은), a verbal noun with 안 하/되 after it (제거 안 함), and a noun followed by 없다
    (곰팡이 없는: what it names is absent)."""
    content = [i for i, m in enumerate(morphemes) if not is_function(m) or m.tag == "XSV"]

    def at(k: int) -> Morpheme | None:
        return morphemes[content[k]] if 0 <= k < len(content) else None

    for k, i in enumerate(content):
        m = morphemes[i]
        before, after, after2 = at(k - 1), at(k + 1), at(k + 2)
        if m.tag in {"VV", "VA", "XR"} or (m.tag == "NNG" and after and after.tag == "XSV"):
            if before and before.tag == "MAG" and before.form in NEGATION_ADVERBS:
                m.neg = True
            # -지 않다: the ending 지 is a function morpheme between the two
            following = morphemes[i + 1 : i + 4]
            forms = [(f.form, f.tag) for f in following]
            if ("지", "EC") in forms:
                rest = following[forms.index(("지", "EC")) + 1 :]
                if rest and rest[0].form in NEGATING_AUXILIARIES:
                    m.neg = True
        if m.tag in {"NNG", "NNP", "SL"}:
            if (
                after
                and after.tag == "MAG"
                and after.form in NEGATION_ADVERBS
                and after2
                and after2.form in DO_VERBS
            ):
                m.neg = True
            if after and (
                (after.tag == "VA" and after.form == "없")
                or (after.tag == "VCN" and after.form == "아니")
            ):
                m.neg = True  # 곰팡이 없는, 종이 아님: what it names is absent, or not it


def is_negation_marker(m: Morpheme) -> bool:
    return (m.tag == "MAG" and m.form in NEGATION_ADVERBS) or (
        m.tag == "VX" and m.form in NEGATING_AUXILIARIES
    )


# Vowels that sound alike in today's Korean and are written one for the other (쓰래기 for 쓰레기,
# 껍대기 for 껍데기, 패트 for 페트): ㅐ/ㅔ, ㅒ/ㅖ, and 왜/외/웨.
_MERGED_VOWELS = str.maketrans({"\u1162": "\u1166", "\u1164": "\u1168", "\u116b": "\u1170",
                                "\u116c": "\u1170"})  # fmt: skip


def fold_vowels(text: str) -> str:
    """``text`` with the vowels people confuse written one way; as many characters as before."""
    return unicodedata.normalize(
        "NFC", unicodedata.normalize("NFD", text).translate(_MERGED_VOWELS)
    )


# --- the language's word lists --------------------------------------------------------------
def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that name no item: "이거", "쓰레기", "stuff". A hint of only these asks what it is.
VAGUE_WORDS = _words(
    """
    이거 이것 이건 요거 요것 저거 저것 그거 그것 거 것 뭐 뭔가 무엇 무언가 얘 애 물건 물품
    쓰레기 폐기물 잡동사니 제품 용품 종류 재활용품 재활용 활용 분리수거 분리배출 뭐지 이것저것
    기타 여러가지 일반
    this that these those it thing things stuff item items something trash garbage rubbish
    waste junk object
    """
)
# Words that describe the amount, time or circumstance, never the item ("유통기한 지난",
# "다 쓴", "a bagful of", "leftover"): left out of the item's words in fuzzy scoring.
FILLER_WORDS = _words(
    """
    유통기한 유통 기한 날짜 정도 개 장 쪽 하나 한개 두개 조금 약간 반쯤 반 전부 모두 다수 여러
    몇 가득 한가득 오늘 어제 아까 방금 예전 옛날 우리 저희 집 우리집 방법 어디 어떻게 질문
    부탁 처리 배출 버리기 실제 정체 상태 때 등 중 것들 개씩 묶음 뭉치 더미 안 속 겉 위 옆 밑
    싱글 슈퍼싱글 더블 퀸 킹 대형 중형 소형 미니 특대 인용
    old used leftover empty expired some a an the my our your his her their of to for
    please how where what which do does should i we you is are was were be been it's
    bunch bag bagful pile stack lot lots handful couple few many piece pieces bit bits half
    full new clean dirty big small large little just only also me them go goes going gone
    throw throwing thrown away dispose disposing disposal recycle recycling recyclable get rid
    need want have has put where when there here but so because accordingly really actually
    nothing else definitely certainly surely trust obviously
    """
)
# Sino-Korean verbal nouns: they name an action (제거 "removal") in "라벨 제거", not a thing.
VERBAL_NOUNS = _words(
    """
    제거 분리 부착 세척 압착 완료 처리 배출 사용 보관 건조 포함 내장 팽창 오염 파손 손상 착색
    밀봉 폐기 수거 교체 고장 작동 충전 방전 개봉 미개봉 세탁 건조 헹굼 접음 펼침 선택 설정 지정
    출력 응답 대답 답변 분류
    """
)
# Counters: after a number or 한/두/세/몇/여러, these count the item ("건전지 한 봉지").
COUNTER_WORDS = _words(
    """
    개 장 병 캔 통 봉지 박스 상자 묶음 뭉치 더미 켤레 벌 권 팩 봉 포 알 정 자루 대 줄 판 말
    곽 갑 짝 쌍 세트 덩어리 조각 개씩 리터 보따리 포대 봉투 바구니 무더기 트럭 가득 통째
    l ml kg g cm mm
    """
)
QUANTITY_DETERMINERS = frozenset({"한", "두", "세", "네", "몇", "여러", "모든", "각", "온갖"})
# Materials: a material right before a head noun says what it is made of (스티로폼 아이스박스),
# which can change the bin.
MATERIAL_WORDS = _words(
    """
    플라스틱 프라스틱 비닐 유리 종이 스티로폼 스티로폴 금속 철 쇠 스텐 스테인리스 알루미늄 양은
    나무 목재 고무 실리콘 도자기 사기 세라믹 천 면 가죽 페트 합성수지 크리스탈 크리스털
    대나무 라탄 등나무 왕골 짚 원목 합판 코르크 법랑 에나멜 무쇠 주물 구리 놋 놋쇠 황동 티타늄
    아크릴 나일론 폴리에스터 멜라민 대리석 옹기 토기 인조가죽 펠트 부직포 린넨 울
    plastic vinyl glass paper styrofoam foam metal steel iron aluminium aluminum tin wood
    wooden rubber silicone ceramic porcelain leather cloth fabric cardboard pet bamboo rattan
    wicker cork copper brass enamel acrylic nylon polyester melamine marble felt wool linen
    """
)
# Words that name a bin or a material rather than a thing (플라스틱, 캔, 음식물): beside an
# instruction, an insistence or a question, they are the answer asked for, not an item.
BIN_WORDS = MATERIAL_WORDS | _words(
    """
    캔 깡 깡통 고철 음식물 음쓰 음식물쓰레기 쓰레기 폐기물 일반쓰레기 종량제 재활용 재활용품 종이류
    플라스틱류 비닐류 캔류 병류 종이팩 스티로폼류
    can cans recyclables food waste general
    """
)
# … of which these name a thing too (a can is a can, whatever is written before it)
CONTAINER_WORDS = _words("캔 깡 깡통 고철 can cans")
# Part nouns: "X 조각" is a piece of X; the material is X's (깨진 소주병 조각).
PART_WORDS = _words(
    "조각 부스러기 파편 가루 쪼가리 토막 잔해 piece pieces shard shards fragment bit"
)
# Adverbs a person drops in without changing what the state is ("라벨이 아직 붙어 있어요").
SKIPPABLE_ADVERBS = _words(
    """
    아직 좀 조금 그냥 완전 완전히 살짝 약간 꽤 진짜 정말 너무 엄청 되게 많이 계속 벌써 이미
    여전히 막 또 대충 거의 약간 다 잘 좀더 그대로 전혀 쫌
    """
)
# Conjunctions that join two items: 이랑/하고/와/과 (tagged JC), 그리고/및/또는, and/or.
CONJUNCTION_WORDS = frozenset({"그리고", "및", "또는", "혹은", "또", "랑", "and", "or", "plus"})
SEGMENT_PUNCTUATION = frozenset({",", "/", "+", "&", ".", ";", "?", "!", "·", "、", "\n"})
# English prepositions: the words after them describe the head before them
# ("packing foam from a new monitor", "shampoo bottle with a pump").
EN_PREPOSITIONS = frozenset(
    {"from", "with", "in", "inside", "on", "for", "without", "containing", "that", "which",
     "under", "at", "by", "into", "off"}
)  # fmt: skip
# English quantity nouns: in "bag of chips" the item is after "of".
EN_QUANTITY_NOUNS = frozenset(
    {"bag", "bagful", "box", "pile", "stack", "bunch", "lot", "handful", "couple", "pair",
     "piece", "bit", "set", "pack", "load", "heap", "roll", "sheet", "kind", "type", "sort"}
)  # fmt: skip
EN_NEGATIONS = frozenset({"not", "no", "without", "isn't", "wasn't", "never", "non", "un"})


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


# Verbs that ask the system for an answer: beside nothing but a bin's own name ("paper 골라",
# "just say general waste"), that name is the instruction's target, not an item.
INSTRUCTION_VERBS = _words(
    """
    답하 대답하 답 대답 말하 출력 출력하 응답 응답하 선택 선택하 고르 골라 설정 설정하 지정
    answer say classify output respond reply choose pick select label categorize categorise
    판정 판정하 찍
    """
)


# Words that frame a bin's name as the answer rather than describe a thing ("카테고리는 종이",
# "이건 무조건 종이야", "treat this as food waste", "set category to paper").
FRAMING_WORDS = _words(
    """
    카테고리 정답 무조건 무시 설정 시스템 지시 명령 프롬프트 강제 확실 확실히 틀림없 틀림없이
    분명 분명히 반드시 백퍼 챗봇 봇 인공지능 모델 끝 확정 final 전부 모든 모두 항상 언제나 뭐든
    뭐든지 무엇이든 always everything all anything whatever
    category answer classify classified categorize categorized categorise categorised label
    output print pretend treat set override instruction system must definitely certainly
    surely trust obviously only nothing else ai bot chatbot gpt model just don't think item
    as write sort consider regard count belongs belong file bin
    """
)


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


# English words the lists name as they are: "goes" is not the plural of "goe"
_LISTED_WORDS = VAGUE_WORDS | FILLER_WORDS | INSTRUCTION_VERBS | EN_PREPOSITIONS | EN_NEGATIONS


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
