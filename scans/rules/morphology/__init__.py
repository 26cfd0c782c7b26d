"""How a hint is written: morphemes (kiwipiepy), negation, and the language's own word lists.

The matcher (scans.rules.matching) reads a hint the way Korean is written: aliases match on
morpheme boundaries (비니루 is not 비니, 캔들 is not 캔), the head noun of a phrase comes last
(건전지 든 리모컨 is a remote control), verbs are compared by their stems (깨져버린 → 깨지) and a
removal verb under 안/못/-지 않 means the opposite (라벨 안 뗀 = the label is still on).

- ``analyser``: Kiwi, loaded once per process; ``analyse`` reads a hint as morphemes, negation
  marked (None without Kiwi: the matcher falls back to substrings).
- ``words``: the language's word lists (filler, vague, quantity and material words, verbal
  nouns, conjunctions, the words of instructions), never about particular items.
- ``phrasing``: text that tries to instruct the system (cut out before matching), a bin's name
  framed, quoted or insisted on as the answer, questions back and hedges.

Arrows: ``phrasing`` → ``analyser`` → ``words``.
"""
