"""The rule base scans are matched against: categories, situation tags, disposal steps, items,
exclusions, and the revision token that says when any of them changed."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class CategoryKind(models.TextChoices):
    RECYCLABLE = "recyclable", _("Recyclable")
    GENERAL = "general", _("General waste")
    NONCOMBUSTIBLE = "noncombustible", _("Non-combustible waste")
    FOOD = "food", _("Food waste")
    CONSTRUCTION = "construction", _("Household construction waste")
    BULKY = "bulky", _("Bulky waste")
    HAZARDOUS = "hazardous", _("Household hazardous waste")


class Category(models.Model):
    """One of the 18 rule-addressable categories (12 recyclable middles + 6 other majors)."""

    code = models.SlugField(max_length=40, unique=True)
    kind = models.CharField(max_length=20, choices=CategoryKind.choices)
    major_ko = models.CharField(max_length=50)
    major_en = models.CharField(max_length=80)
    middle_ko = models.CharField(
        max_length=50, help_text=_("Same as the major for non-recyclables.")
    )
    middle_en = models.CharField(max_length=80)
    summary_ko = models.TextField(blank=True)
    summary_en = models.TextField(blank=True)
    position = models.PositiveSmallIntegerField(default=0)
    reroutes = models.JSONField(
        default=list,
        blank=True,
        help_text=_(
            'States that send an item of this category to another bin: [{"tag": "broken", '
            '"goes_to": "noncombustible", "note_ko": "…", "note_en": "…"}].'
        ),
    )

    class Meta:
        ordering = ["position", "code"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return f"{self.middle_ko} ({self.middle_en})"


class SituationTag(models.Model):
    """A visually or verbally verifiable situation, e.g. "label attached"."""

    code = models.SlugField(max_length=50, unique=True)
    group = models.CharField(max_length=30)
    name_ko = models.CharField(max_length=80)
    name_en = models.CharField(max_length=120)
    fix_ko = models.CharField(
        max_length=200, blank=True, help_text=_("What the user still has to do.")
    )
    fix_en = models.CharField(max_length=200, blank=True)
    triggers = models.JSONField(
        default=list, blank=True, help_text=_("Hint phrases that mean the tag applies.")
    )
    negations = models.JSONField(
        default=list, blank=True, help_text=_("Hint phrases that mean it does not.")
    )

    class Meta:
        ordering = ["group", "code"]

    def __str__(self) -> str:
        return f"{self.code} ({self.name_ko})"


class DisposalStep(models.Model):
    """A disposal step of a category; with a tag, it applies only when that tag is present.

    A step with ``unless_tag`` is left out when that tag is present: a tagged step that says
    the same thing for that situation stands in its place ("peel off the label" gives way to
    "tear the label off along the perforation"), so the guidance does not say it twice.
    """

    category = models.ForeignKey(Category, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField(default=0)
    tag = models.ForeignKey(
        SituationTag, null=True, blank=True, on_delete=models.CASCADE, related_name="steps"
    )
    unless_tag = models.ForeignKey(
        SituationTag,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="replaced_steps",
        help_text=_("Left out when this tag is present (a step of that tag replaces it)."),
    )
    text_ko = models.TextField()
    text_en = models.TextField()
    # A step about some items of its category only (the butane step is not an aluminium
    # can's): ``items`` lists the items it is for, ``except_items`` those it is not for (the
    # rule base's Korean item or exclusion names); both empty: every item.
    items = models.JSONField(
        default=list,
        blank=True,
        help_text=_("Only for these items (Korean names); empty: every item of the category."),
    )
    except_items = models.JSONField(
        default=list, blank=True, help_text=_("Not for these items (Korean names).")
    )

    class Meta:
        ordering = ["category", "position"]

    def __str__(self) -> str:
        return self.text_ko


class Item(models.Model):
    """A target item of a category, with the names people actually type."""

    category = models.ForeignKey(Category, on_delete=models.CASCADE, related_name="items")
    name_ko = models.CharField(max_length=80)
    name_en = models.CharField(max_length=120)
    aliases = models.JSONField(default=list, blank=True)
    reroutes = models.JSONField(
        default=list,
        blank=True,
        help_text=_("Like the category's reroutes, for this item only (checked first)."),
    )
    conditions = models.JSONField(
        default=list,
        blank=True,
        help_text=_(
            'Where the bin depends on a condition: [{"when_ko": "…", "when_en": "…", '
            '"goes_to": "metal", "tag" or "absent": "contents_left"}], one per bin.'
        ),
    )

    class Meta:
        ordering = ["category", "name_ko"]

    def __str__(self) -> str:
        return f"{self.name_ko} ({self.name_en})"


class Exclusion(models.Model):
    """ "Not this bin": an item people put in ``category`` that belongs in ``goes_to``."""

    category = models.ForeignKey(Category, on_delete=models.CASCADE, related_name="exclusions")
    name_ko = models.CharField(max_length=80)
    name_en = models.CharField(max_length=120)
    aliases = models.JSONField(default=list, blank=True)
    goes_to = models.ForeignKey(Category, on_delete=models.CASCADE, related_name="redirected_from")
    note_ko = models.TextField(blank=True)
    note_en = models.TextField(blank=True)
    reroutes = models.JSONField(
        default=list,
        blank=True,
        help_text=_("Like the category's reroutes, for this item only (checked first)."),
    )
    conditions = models.JSONField(
        default=list,
        blank=True,
        help_text=_(
            'Where the bin depends on a condition: [{"when_ko": "…", "when_en": "…", '
            '"goes_to": "metal", "tag" or "absent": "contents_left"}], one per bin.'
        ),
    )

    class Meta:
        ordering = ["category", "name_ko"]

    def __str__(self) -> str:
        return f"{self.name_ko} → {self.goes_to.code}"


class RuleBaseRevision(models.Model):
    """One row whose token changes with every change to the rule base.

    Processes keep the rule base in memory (scans.rules.cache) and compare this token,
    one indexed read, instead of reading five tables per scan.
    """

    token = models.CharField(max_length=32)
    changed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"rule base revision {self.token} ({self.changed_at:%Y-%m-%d %H:%M:%S})"
