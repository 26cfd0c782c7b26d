import gc
import os
import warnings

from django.core.asgi import get_asgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eco2.settings")
# Static files (WhiteNoise) and photos are file responses with a synchronous iterator; under
# ASGI Django reads them in a thread, which is fine for files this small. Only live progress
# (scans.api.events.scan_events) streams, and it is asynchronous.
warnings.filterwarnings(
    "ignore",
    message="StreamingHttpResponse must consume synchronous iterators",
    category=Warning,
)
application = get_asgi_application()

# The objects a web process creates once (modules, settings, URLconf, views, serializers,
# Celery's app: ~130k containers) live as long as the process. Left to the collector, every full
# collection walks them all: 55-70 ms on the 2-core host, every few hundred uploads (each
# allocates thousands of containers), in the middle of some request, which was the upload's
# p99 (bench/api_latency.py). Import the views now (the first request would anyway) and move
# everything to the permanent generation: later collections only walk what requests create.
get_resolver().url_patterns  # noqa: B018
gc.freeze()
