"""The rule base, held in memory per process and refreshed when its revision changes.

Every scan resolves a category and reads its steps, exclusions and tag fixes; the vision
prompt renders the taxonomy; the offline matcher indexes every alias. The rule base changes
rarely (``manage.py load_rulebase``, an edit in the admin), so instead of five queries per
scan a process keeps one immutable snapshot and compares a revision token (one indexed read)
before using it. Any ORM write to a rule-base model changes the token in the same
transaction (signals below); ``load_rulebase`` changes it once for the whole load. Writes that
bypass the ORM (raw SQL) are not seen until the next ORM change or ``load_rulebase``.

The token is random, not a counter: a test database flushed and loaded again must not look
unchanged to a worker that cached the first load.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.db.models import Subquery
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from ..models import Category, DisposalStep, Exclusion, Item, RuleBaseRevision, SituationTag

RULEBASE_MODELS = (Category, SituationTag, DisposalStep, Item, Exclusion)


@dataclass(frozen=True)
class RuleBase:
    """An immutable snapshot of the rule base. Its model instances are shared between
    threads: read them, never change or save them."""

    token: str
    categories: tuple[Category, ...]  # the rule base's order (position, code)
    tags: tuple[SituationTag, ...]  # (group, code)
    items: tuple[Item, ...]  # (category, name_ko), with their category
    exclusions: tuple[Exclusion, ...]  # (category, name_ko), with goes_to
    steps: tuple[DisposalStep, ...]  # (category, position), with their tags
    by_code: dict[str, Category] = field(init=False)
    first_item_named: dict[str, Item] = field(init=False)
    items_by_name: dict[tuple[int, str], Item] = field(init=False)
    exclusions_by_name: dict[tuple[int, str], Exclusion] = field(init=False)

    def __post_init__(self) -> None:
        first: dict[str, Item] = {}
        for item in self.items:
            first.setdefault(item.name_ko, item)
        object.__setattr__(self, "by_code", {c.code: c for c in self.categories})
        object.__setattr__(self, "first_item_named", first)
        object.__setattr__(
            self, "items_by_name", {(i.category_id, i.name_ko): i for i in reversed(self.items)}
        )
        # an exclusion stands for an item of the bin it sends things to
        object.__setattr__(
            self,
            "exclusions_by_name",
            {(e.goes_to_id, e.name_ko): e for e in reversed(self.exclusions)},
        )

    def reroute(
        self,
        category: Category,
        item_name: str | None,
        tags: Iterable[str],
        absent: Iterable[str] = (),
    ) -> tuple[Category, list[dict[str, Any]]]:
        """Where an item goes given its state: the reroutes its tags trigger (``tag``: the
        state is there; ``absent``: the hint says it is not, as in 빈 페인트 통), the item's own
        first (an item of the category, or an exclusion that sends things to it), then the
        category's, followed until none applies (a category is never entered twice). Returns
        the final category and the hops taken (empty: no state changed it)."""
        tags, absent = set(tags), set(absent)
        hops: list[dict[str, Any]] = []
        if not tags and not absent:
            return category, hops
        seen = {category.code}
        entry = self.entry_of(category, item_name)
        current = category
        while True:
            rules = [
                *(entry.reroutes if entry else ()),
                *(entry_condition_reroutes(entry) if entry else ()),
                *(current.reroutes or ()),
            ]
            hop = next(
                (
                    r
                    for r in rules
                    if (r.get("tag") in tags or r.get("absent") in absent)
                    and r.get("goes_to") in self.by_code
                    and r["goes_to"] not in seen
                ),
                None,
            )
            if hop is None:
                return current, hops
            hops.append(
                {
                    "from": current.code,
                    "tag": hop.get("tag") or hop.get("absent"),
                    "absent": "absent" in hop,
                    "to": hop["goes_to"],
                    "note_ko": hop.get("note_ko") or "",
                    "note_en": hop.get("note_en") or "",
                    # a condition of the item settled it: "다 쓰고 말린 빈 통이면"
                    "when_ko": hop.get("when_ko") or "",
                    "when_en": hop.get("when_en") or "",
                }
            )
            current = self.by_code[hop["goes_to"]]
            seen.add(current.code)
            entry = None  # an item's own reroutes speak for its own category only

    def entry_of(self, category: Category, item_name: str | None) -> Item | Exclusion | None:
        """The rule base's item (or exclusion sending things to ``category``) a
        classification's item name names, by its Korean name; None when it names none."""
        key = (category.pk, item_name or "")
        return self.items_by_name.get(key) or self.exclusions_by_name.get(key)

    def steps_of(self, category: Category) -> list[DisposalStep]:
        return [s for s in self.steps if s.category_id == category.pk]

    def exclusions_of(self, category: Category) -> list[Exclusion]:
        return [e for e in self.exclusions if e.category_id == category.pk]


def entry_condition_reroutes(entry: Item | Exclusion) -> list[dict[str, Any]]:
    """An item's ``conditions`` that a state settles (``tag`` or ``absent``), as reroutes: the
    hint that says the paint tin is empty sends it to the bin of that condition."""
    return [
        {
            key: condition[key]
            for key in ("tag", "absent", "goes_to", "when_ko", "when_en")
            if key in condition
        }
        for condition in entry.conditions or []
        if isinstance(condition, dict) and ("tag" in condition or "absent" in condition)
    ]


_lock = threading.Lock()
_snapshot: RuleBase | None = None
_suppressed = threading.local()


def rulebase_token() -> str:
    """The current revision token ("" before the rule base was ever changed)."""
    with connection.cursor() as cursor:
        # the table name is the model's own, never input
        cursor.execute(f"SELECT token FROM {RuleBaseRevision._meta.db_table} WHERE id = 1")  # noqa: S608
        row = cursor.fetchone()
    return row[0] if row else ""


def _read(token: str) -> RuleBase:
    return RuleBase(
        token=token,
        categories=tuple(Category.objects.all()),
        tags=tuple(SituationTag.objects.all()),
        items=tuple(Item.objects.select_related("category")),
        exclusions=tuple(Exclusion.objects.select_related("goes_to")),
        steps=tuple(DisposalStep.objects.select_related("tag", "unless_tag")),
    )


# A pipeline step reads the token once: with the scan it loads (scans.services.state), then
# every use in the step (the prompt, the rules, the answer's names) takes that revision. One
# revision for the whole step, and no token query per use (three to five a scan with the
# OpenAI providers). None outside a step (a web request, a command): each use reads it.
_step_token: ContextVar[list[str] | None] = ContextVar("eco2_rulebase_token", default=None)


@contextlib.contextmanager
def one_revision_per_step() -> Iterator[None]:
    """Within this block the rule base's token is read at most once (or given by
    note_rulebase_token, from a query that read it anyway)."""
    reset = _step_token.set([])
    try:
        yield
    finally:
        _step_token.reset(reset)


def note_rulebase_token(token: str) -> None:
    """The token as a query of the step read it (a subquery of the scan's load): the step
    uses this revision. Nothing outside one_revision_per_step."""
    held = _step_token.get()
    if held is not None and not held:
        held.append(token)


def token_subquery() -> Subquery:
    """The token as a subquery, for a step's query that reads it with its own row."""
    return Subquery(RuleBaseRevision.objects.filter(pk=1).values("token")[:1])


def current_rulebase() -> RuleBase:
    """The rule base as committed now: the cached snapshot, or a fresh one if it changed."""
    global _snapshot
    # the token is read before the tables: a snapshot is never older than its token
    held = _step_token.get()
    if held:
        token = held[0]
    else:
        token = rulebase_token()
        if held is not None:
            held.append(token)
    snapshot = _snapshot
    if snapshot is not None and snapshot.token == token:
        return snapshot
    with _lock:  # one thread reads the tables; the others wait for its snapshot
        if _snapshot is None or _snapshot.token != token:
            _snapshot = _read(token)
        return _snapshot


def bump_rulebase_revision() -> str:
    """Give the rule base a new token, in the caller's transaction."""
    token = uuid.uuid4().hex
    now = timezone.now()
    if not RuleBaseRevision.objects.filter(pk=1).update(token=token, changed_at=now):
        RuleBaseRevision.objects.update_or_create(
            pk=1, defaults={"token": token, "changed_at": now}
        )
    return token


@contextlib.contextmanager
def one_revision() -> Iterator[None]:
    """Many rule-base writes (a whole load) make one new token, at the end."""
    _suppressed.active = getattr(_suppressed, "active", 0) + 1
    try:
        yield
    finally:
        _suppressed.active -= 1
    if not _suppressed.active:
        bump_rulebase_revision()


def _rulebase_changed(sender, **kwargs) -> None:
    if not getattr(_suppressed, "active", 0):
        bump_rulebase_revision()


for _model in RULEBASE_MODELS:
    post_save.connect(_rulebase_changed, sender=_model, dispatch_uid=f"rulebase-{_model.__name__}")
    post_delete.connect(
        _rulebase_changed, sender=_model, dispatch_uid=f"rulebase-del-{_model.__name__}"
    )
