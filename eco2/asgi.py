import os
import warnings

from django.core.asgi import get_asgi_application

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
