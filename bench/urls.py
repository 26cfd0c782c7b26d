"""The project's URLs plus ``/bench/bare``: an authenticated DRF view that returns 202 and does
nothing else, the baseline the upload endpoint is measured against."""

from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView


class BareAccepted(APIView):
    def post(self, request):
        return Response({"status": "queued"}, status=202)


urlpatterns = [
    path("bench/bare", BareAccepted.as_view()),
    path("", include("eco2.urls")),
]
