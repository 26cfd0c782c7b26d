"""What a worker does for the scans app as it starts: declare the dead-letter queue, and load
the Korean analyser before the pool forks. Connected by ScansConfig.ready()."""

from __future__ import annotations

import logging

from celery import signals

from eco2.queues import SCAN_PIPELINE_QUEUE

from .broker import declare_dead_letter_queue

logger = logging.getLogger(__name__)


@signals.worker_ready.connect(dispatch_uid="scans.worker_start.dead_letter_queue")
def _declare_dead_letter_queue(**kwargs: object) -> None:
    declare_dead_letter_queue()


@signals.worker_init.connect(dispatch_uid="scans.worker_start.analyser")
def _load_the_korean_analyser_before_the_pool_starts(
    sender: object = None, **kwargs: object
) -> None:
    """A worker that runs the offline matcher loads Kiwi (scans.rules.morphology) once, up front.

    Loaded here, in the main process before the pool forks, prefork children share its ~310 MB
    copy-on-write instead of each loading it (~1.5 s) on its first scan; a threads pool shares
    it anyway. Only a worker that consumes the AI queue with the offline vision provider loads
    it (any provider that reads only the hint, ``sees_photos = False``); it reads no database
    (no connection may cross a fork). A failure only logs: the matcher falls back to substrings.
    """
    from .providers import vision_sees_photos

    if vision_sees_photos():  # a provider that looks at the photo never runs the matcher
        return
    queues = getattr(getattr(getattr(sender, "app", None), "amqp", None), "queues", None)
    consumed = getattr(queues, "consume_from", None)
    if consumed and SCAN_PIPELINE_QUEUE not in consumed:
        return
    from .rules.morphology.analyser import warm_analyser

    if warm_analyser():
        logger.info("Korean analyser loaded before the pool starts")
