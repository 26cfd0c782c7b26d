from django.urls import path

from .auth import TokenView
from .batches import BatchCreateView, BatchDetailView
from .events import scan_events
from .scans import (
    CategoriesView,
    ScanChooseView,
    ScanDetailView,
    ScanHintView,
    ScanListCreateView,
)

app_name = "api"

urlpatterns = [
    path("scans", ScanListCreateView.as_view(), name="scan-list"),
    path("scans/batch", BatchCreateView.as_view(), name="batch-create"),
    path("batches/<str:batch_id>", BatchDetailView.as_view(), name="batch-detail"),
    path("scans/<str:task_id>", ScanDetailView.as_view(), name="scan-detail"),
    path("scans/<str:task_id>/events", scan_events, name="scan-events"),
    path("scans/<str:task_id>/choose", ScanChooseView.as_view(), name="scan-choose"),
    path("scans/<str:task_id>/hint", ScanHintView.as_view(), name="scan-hint"),
    path("categories", CategoriesView.as_view(), name="categories"),
    path("auth/token", TokenView.as_view(), name="auth-token"),
]
