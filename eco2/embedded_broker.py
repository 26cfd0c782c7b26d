"""The embedded broker: kombu's filesystem transport, with every file written whole.

kombu's filesystem channel (5.7) creates a message file in the queue folder and only then
locks it and writes the message. A consumer lists the folder, moves the file away and reads
it without a lock, so on a busy machine it can read the file while it is still empty: the
JSON decode error escapes the consumer's loop and the whole worker stops ("Unrecoverable
error: JSONDecodeError", kombu issue #1551, open), the message lost with it. Found by
tests/integration/pipeline/test_pipeline_openai.py on a loaded machine: a retried vision step never came back.
The exchange tables have the same window (opened with "wb", truncated, before the lock), and
two processes binding at once can each write a table without the other's queue.

Here a message or a table is written under a hidden name in the same folder and renamed into
place, which is atomic: a reader sees the whole file or no file. Its name sorts in publish
order (kombu's names do not, see ``message_file_name``). A table is read, changed
and replaced under a lock file of its own, so concurrent binds keep every binding. A message
file that still cannot be read (left by another writer) is logged and dropped instead of
stopping the worker. A consumer takes a message off its queue by renaming it inside the
queue folder (kombu moves it to the system temp folder: across file systems that move is a
copy and a delete, and two consumers could both copy one message); a claim whose consumer died
before reading it goes back on the queue after a minute. Settings select this
transport for ``filesystem://`` broker URLs (``CELERY_BROKER_TRANSPORT``).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from queue import Empty
from time import time, time_ns

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, virtual
from kombu.transport.filesystem import LOCK_EX, exchange_queue_t, lock, unlock
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)

Table = list[exchange_queue_t]

# digits of the microsecond clock in a message file's name (now 16; 20 lasts past year 5000)
TIME_DIGITS = 20
CLAIMED = ".claimed"  # a consumer's claim of a message file: ``.<its name>.claimed``


def transport_options(folder: Path) -> dict[str, object]:
    """The options of a broker kept in ``folder`` (its queue, control and processed folders,
    created here): what the settings give the app's broker and the benchmarks' raw Celery
    app (bench/raw_celery.py) gives its own, so both poll alike."""
    folders = {name: folder / name for name in ("queue", "control", "processed")}
    for path in folders.values():
        path.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(folders["queue"]),
        "data_folder_out": str(folders["queue"]),
        "control_folder": str(folders["control"]),
        "processed_folder": str(folders["processed"]),
        "store_processed": False,
        # the transport polls; 0.1 s keeps a three-step chain snappy
        "polling_interval": 0.1,
    }


def message_file_name(queue: str, sent_at_us: int | None = None) -> str:
    """The name kombu's consumer matches and sorts on: ``<time>_<uuid>.<queue>.msg``.

    kombu sorts a queue folder by name, and its own names start with unpadded milliseconds of
    the monotonic clock: once that clock gains a digit (every boot at 2.8 h, 28 h, ...), or
    after a reboot resets it, an older message sorts behind newer ones. Zero-padded wall-clock
    microseconds make name order the publish order, across restarts too.
    """
    sent_at_us = time_ns() // 1000 if sent_at_us is None else sent_at_us
    return f"{sent_at_us:0{TIME_DIGITS}d}_{uuid.uuid4()}.{queue}.msg"


def write_whole(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that no reader ever sees a part of it.

    The hidden name (``.<hex>.tmp``) matches no queue's ``<time>_<uuid>.<queue>.msg`` pattern,
    so consumers, purges and queue-depth counts skip it until the rename.
    """
    temporary = path.with_name(f".{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


class Channel(filesystem.Channel):
    CLAIM_STALE_SECONDS = 60.0

    def _put(self, queue, payload, **kwargs):
        name = message_file_name(queue)
        try:
            write_whole(Path(self.data_folder_out) / name, str_to_bytes(dumps(payload)))
        except OSError as exc:
            raise ChannelError(f"Cannot add file {name!r} to directory") from exc

    def _get(self, queue):
        """The oldest message of ``queue``, claimed by a rename inside the queue folder.

        A rename within one folder is atomic, so of consumers racing for a file exactly one
        gets it; the others skip to the next file. The claimed name keeps the message's own
        (``.<name>.claimed``): a consumer killed between its claim and its read leaves the
        file, and after ``CLAIM_STALE_SECONDS`` the next consumer puts it back on the queue.
        """
        folder = Path(self.data_folder_in)
        wanted = f"{queue}.msg"
        names = sorted(os.listdir(folder))
        if any(name.endswith(CLAIMED) for name in names):
            names = sorted({*names, *self._restore_stale_claims(folder, names, wanted)})
        for name in names:
            if name.partition(".")[2] != wanted:
                continue
            claimed = folder / f".{name}{CLAIMED}"
            try:
                os.rename(folder / name, claimed)
            except OSError:  # another consumer took it first
                continue
            try:
                payload = claimed.read_bytes()
                if self.store_processed:
                    shutil.move(claimed, Path(self.processed_folder) / name)
                else:
                    claimed.unlink()
            except FileNotFoundError:  # stalled past CLAIM_STALE_SECONDS: back on the queue
                continue
            except OSError as exc:
                raise ChannelError(f"Cannot read file {name!r} from queue.") from exc
            try:
                return loads(bytes_to_str(payload))
            except ValueError:  # JSONDecodeError: left by a writer that is not this transport
                logger.error(
                    "embedded broker: dropped an unreadable message file of queue %s", queue
                )
        raise Empty()

    def _restore_stale_claims(self, folder: Path, names: list[str], wanted: str) -> list[str]:
        """Put messages of this queue claimed longer ago than CLAIM_STALE_SECONDS back under
        their own names; returns those names. A claim is read at once, so an old one is a
        consumer that died in between (the rename set the file's ctime)."""
        restored = []
        for name in names:
            original = name[1:].removesuffix(CLAIMED)
            if not name.endswith(CLAIMED) or original.partition(".")[2] != wanted:
                continue
            try:
                if time() - os.stat(folder / name).st_ctime < self.CLAIM_STALE_SECONDS:
                    continue
                os.rename(folder / name, folder / original)
            except OSError:  # read meanwhile, or restored by another consumer
                continue
            logger.warning(
                "embedded broker: a message of queue %s was claimed and never read; "
                "it is back on the queue",
                wanted.removesuffix(".msg"),
            )
            restored.append(original)
        return restored

    @contextmanager
    def _table_locked(self, exchange: str) -> Iterator[Path]:
        table = self._exchange_file(exchange)  # validates the exchange name first
        self.control_folder.mkdir(exist_ok=True)
        with open(table.with_name(f".{table.name}.lock"), "ab") as lock_file:
            lock(lock_file, LOCK_EX)
            try:
                yield table
            finally:
                unlock(lock_file)

    def _change_table(self, exchange: str, change: Callable[[Table], Table | None]) -> None:
        """Apply ``change`` to the exchange's table under its lock; None leaves it as it is."""
        with self._table_locked(exchange) as table:
            try:
                queues = self.get_table(exchange)
            except ValueError:  # a table cut short by an older writer: the binds rebuild it
                logger.warning("embedded broker: rebuilding the unreadable table %s", table)
                queues = []
            changed = change(queues)
            if changed is not None:
                write_whole(table, str_to_bytes(dumps(changed)))

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        binding = exchange_queue_t(routing_key or "", pattern or "", queue or "")
        try:
            self._change_table(
                exchange, lambda queues: None if binding in queues else [binding, *queues]
            )
        except OSError as exc:
            raise ChannelError(f"Cannot bind {queue!r} to {exchange!r}") from exc

    def _delete(self, queue, exchange, routing_key, pattern, *args, **kwargs):
        # the virtual channel's part (purge the queue), not the filesystem channel's rewrite
        virtual.Channel._delete(self, queue, exchange, routing_key, pattern, *args, **kwargs)
        binding = exchange_queue_t(routing_key or "", pattern or "", queue or "")
        if self._exchange_file(exchange).exists():
            self._change_table(
                exchange,
                lambda queues: [q for q in queues if q != binding] if binding in queues else None,
            )


class Transport(filesystem.Transport):
    Channel = Channel
