from django.urls import path

from . import views

app_name = "notifications"

# included under settings/ (eco2/urls.py): /settings/notifications/
urlpatterns = [
    path("notifications/", views.preferences, name="preferences"),
]
