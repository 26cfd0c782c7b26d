"""The admin of the rule base: categories (with their steps, items and exclusions), tags, items."""

from django.contrib import admin

from ..models import (
    Category,
    DisposalStep,
    Exclusion,
    Item,
    SituationTag,
)


class DisposalStepInline(admin.TabularInline):
    model = DisposalStep
    extra = 0
    fields = ("position", "tag", "unless_tag", "text_ko", "text_en", "items", "except_items")


class ItemInline(admin.TabularInline):
    model = Item
    extra = 0
    fields = ("name_ko", "name_en", "aliases", "conditions")


class ExclusionInline(admin.TabularInline):
    model = Exclusion
    fk_name = "category"
    extra = 0
    fields = ("name_ko", "name_en", "aliases", "goes_to", "note_ko", "note_en", "conditions")


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ("code", "middle_ko", "middle_en", "major_ko", "kind", "position")
    list_filter = ("kind",)
    search_fields = ("code", "middle_ko", "middle_en", "items__name_ko", "items__name_en")
    inlines = [DisposalStepInline, ItemInline, ExclusionInline]


@admin.register(SituationTag)
class SituationTagAdmin(admin.ModelAdmin):
    list_display = ("code", "group", "name_ko", "name_en", "fix_ko")
    list_filter = ("group",)
    search_fields = ("code", "name_ko", "name_en")


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ("name_ko", "name_en", "category")
    list_filter = ("category",)
    search_fields = ("name_ko", "name_en", "aliases")
