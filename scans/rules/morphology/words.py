"""The language's own word lists: filler, vague and quantity words, the nouns that name an
action rather than a thing, materials, conjunctions, and the words of instructions.

About the language, never about particular items. The matcher (scans.rules.matching) and the
analyser (scans.rules.morphology.analyser) read them; they import nothing.
"""

from __future__ import annotations


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


# English words the lists name as they are: "goes" is not the plural of "goe"
LISTED_WORDS = VAGUE_WORDS | FILLER_WORDS | INSTRUCTION_VERBS | EN_PREPOSITIONS | EN_NEGATIONS
