from django.urls import path

from . import api
from .views import scan_events

app_name = "api"

urlpatterns = [
    path("scans", api.ScanListCreateView.as_view(), name="scan-list"),
    path("scans/batch", api.BatchCreateView.as_view(), name="batch-create"),
    path("batches/<str:batch_id>", api.BatchDetailView.as_view(), name="batch-detail"),
    path("scans/<str:task_id>", api.ScanDetailView.as_view(), name="scan-detail"),
    path("scans/<str:task_id>/events", scan_events, name="scan-events"),
    path("scans/<str:task_id>/choose", api.ScanChooseView.as_view(), name="scan-choose"),
    path("scans/<str:task_id>/hint", api.ScanHintView.as_view(), name="scan-hint"),
    path("categories", api.CategoriesView.as_view(), name="categories"),
    path("auth/token", api.TokenView.as_view(), name="auth-token"),
]
