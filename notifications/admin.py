from django.contrib import admin, messages
from django.utils.translation import gettext_lazy, ngettext

from . import services
from .models import Notification, NotificationPreference, NotificationStatus


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "kind",
        "channel",
        "to_address",
        "subject",
        "status",
        "attempts",
        "sent_at",
    )
    list_filter = ("status", "kind", "channel")
    search_fields = ("to_address", "subject", "dedupe_key", "recipient__username", "last_error")
    date_hierarchy = "created_at"
    list_select_related = ("recipient",)
    raw_id_fields = ("recipient", "scan")
    actions = ("send_again",)
    # The status fields are written only by the send task's conditional updates; editing them
    # here could mark a mail sent that was not, or send one twice.
    readonly_fields = (
        "dedupe_key",
        "status",
        "attempts",
        "last_error",
        "created_at",
        "updated_at",
        "sent_at",
    )

    def has_add_permission(self, request) -> bool:
        return False  # notifications come from events, with a dedupe key

    @admin.action(description=gettext_lazy("Send selected failed notifications again"))
    def send_again(self, request, queryset) -> None:
        ids = list(queryset.filter(status=NotificationStatus.FAILED).values_list("pk", flat=True))
        count = services.send_again(ids)
        self.message_user(
            request,
            ngettext(
                "%(count)d notification queued to be sent again.",
                "%(count)d notifications queued to be sent again.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(admin.ModelAdmin):
    list_display = ("user", "email_on_scan_completed", "updated_at")
    list_filter = ("email_on_scan_completed",)
    search_fields = ("user__username", "user__email")
    raw_id_fields = ("user",)
