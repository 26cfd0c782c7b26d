from django.urls import path

from . import views

app_name = "scans"

urlpatterns = [
    path("", views.upload, name="upload"),
    path("scans/", views.history, name="history"),
    path("scans/<uuid:scan_id>/", views.detail, name="detail"),
    path("scans/<uuid:scan_id>/image", views.image, name="image"),
    path("scans/<uuid:scan_id>/retry", views.retry, name="retry"),
    path("scans/<uuid:scan_id>/choose", views.choose, name="choose"),
    path("scans/<uuid:scan_id>/hint", views.add_hint, name="hint"),
]
