"""Container health checks for every Eco² role, with the standard library only.

    python docker/healthcheck.py http /readyz        web: GET on 127.0.0.1:$PORT, 2xx = healthy
    python docker/healthcheck.py flower              Flower's own /healthcheck (honours
                                                     FLOWER_URL_PREFIX and FLOWER_PORT)
    python docker/healthcheck.py worker              a Celery worker process runs, is not
                                                     stalled (below), and holds an ESTABLISHED
                                                     TCP connection to the broker
    python docker/healthcheck.py worker --process-only   the same without the broker connection
                                                     (liveness: a broker outage restarts nothing)
    python docker/healthcheck.py process celery beat     a process whose command line has all
                                                         of these words runs (beat)

Exit status 0 = healthy, 1 = unhealthy (the reason is printed; Docker keeps the last output in
``docker inspect``).

Why workers are not checked with ``celery inspect ping``: a ping is a broadcast that the worker
answers from its event loop, and the caller waits one second by default. Under AI I/O load the
answer comes late, the probe fails, the orchestrator restarts a healthy worker, and its tasks
in flight are redelivered or lost: that is what happened in the original deployment
(~25 of 33 failures at 1000 virtual users). Everything here reads ``/proc`` instead, which costs
nothing and does not depend on how busy the worker is:

* the worker's main process exists and is not a zombie or stopped;
* it holds an ESTABLISHED connection to the broker's port. Celery sends AMQP heartbeats from
  that same event loop, so a wedged loop stops them and RabbitMQ closes the connection after
  the heartbeat timeout: the check then fails. A broker restart also fails it until the worker
  has reconnected; give the check enough retries to ride that out (compose.yaml: 5 × 30 s).

The broker check only applies to amqp:// URLs (the embedded filesystem broker has no socket).

Neither notices a worker that is connected and alive but makes no progress: SIGKILL of a prefork
pool child (the OOM killer) once left the main process deadlocked on the pool's lock, every
check green, no task run for minutes. Each worker therefore watches its own progress
(eco2/worker_watch.py) and writes a report to ``WORKER_STATE_DIR/<node name>.json`` (default
``$ECO2_VAR_DIR/state/workers``); the worker check fails while a live worker's report says
stalled (work received or queued, no task started or finished for WORKER_STALL_SECONDS), or was
not rewritten in time (the process is frozen). Reading a file costs nothing under load either.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

PROC = Path("/proc")
# /proc/<pid>/stat states that mean "not running": zombie, stopped, traced, dead
BAD_STATES = {"Z", "T", "t", "X", "x"}
TCP_ESTABLISHED = "01"
AMQP_PORTS = {"amqp": 5672, "pyamqp": 5672, "amqps": 5671}


# --- HTTP -----------------------------------------------------------------------------------
def check_http(path: str, port: int, host: str, timeout: float = 3.0) -> str | None:
    """None when GET http://127.0.0.1:port/path answers 2xx, else the reason."""
    url = f"http://127.0.0.1:{port}/{path.lstrip('/')}"
    # Django answers 400 to a Host that is not in ALLOWED_HOSTS: send one that is.
    request = urllib.request.Request(url, headers={"Host": host, "User-Agent": "eco2-health"})
    try:
        # always http://127.0.0.1:<port>/…, built above: no other scheme can get here
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return None if 200 <= response.status < 300 else f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        body = exc.read(300).decode("utf-8", "replace")
        return f"{url}: HTTP {exc.code} {body}"
    except OSError as exc:
        return f"{url}: {exc}"


# --- processes ------------------------------------------------------------------------------
def processes(proc: Path = PROC) -> Iterator[tuple[int, list[str], str]]:
    """(pid, argv, state) of every process this user can see."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        # "pid (comm) S ...": comm may contain spaces and parentheses, the state follows the
        # last closing parenthesis
        state = stat.rpartition(")")[2].split()[0] if ")" in stat else "?"
        words = [a.decode("utf-8", "replace") for a in argv if a]
        yield int(entry.name), words, state


def find_process(
    words: Iterable[str], proc: Path = PROC, bad_states: Iterable[str] = BAD_STATES
) -> list[int]:
    """Pids of live processes (not in ``bad_states``) whose command line has every word as a
    token.

    Tokens are split at spaces, slashes and punctuation, so ``/opt/venv/bin/celery`` has
    ``celery``, and a title set by setproctitle (``[celeryd: ai@host:MainProcess] -active-
    (worker …)``) has ``celeryd``, which counts as ``celery``.
    """
    wanted = list(words)
    found = []
    for pid, argv, state in processes(proc):
        if pid == os.getpid() or state in bad_states:
            continue
        tokens = set(re.split(r"[\s/=:,()\[\]]+", " ".join(argv)))
        if all(word in tokens or word + "d" in tokens for word in wanted):
            found.append(pid)
    return found


def worker_pids(proc: Path = PROC) -> list[int]:
    """The Celery worker's processes: ``celery ... worker`` (main process and pool children)."""
    return find_process(["celery", "worker"], proc)


# --- sockets --------------------------------------------------------------------------------
def broker_ports(url: str) -> set[int]:
    """TCP ports of the AMQP broker URL(s) (``;`` separates failover URLs); empty if not AMQP."""
    ports = set()
    for part in url.split(";"):
        parts = urlsplit(part.strip())
        scheme = parts.scheme.split("+")[0]
        if scheme in AMQP_PORTS:
            ports.add(parts.port or AMQP_PORTS[scheme])
    return ports


def established_remote_ports(proc: Path = PROC) -> dict[int, set[int]]:
    """{socket inode: {remote port}} of ESTABLISHED TCP sockets (IPv4 and IPv6)."""
    sockets: dict[int, set[int]] = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if len(fields) < 10 or fields[3] != TCP_ESTABLISHED:
                continue
            remote_port = int(fields[2].rpartition(":")[2], 16)
            sockets.setdefault(int(fields[9]), set()).add(remote_port)
    return sockets


def socket_inodes(pid: int, proc: Path = PROC) -> set[int]:
    """Inodes of the sockets a process has open (needs the same user, or root)."""
    inodes = set()
    try:
        fds = list((proc / str(pid) / "fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def connected_to(pids: Iterable[int], ports: set[int], proc: Path = PROC) -> bool:
    """True when one of the processes holds an ESTABLISHED socket to one of the ports."""
    established = established_remote_ports(proc)
    for pid in pids:
        for inode in socket_inodes(pid, proc):
            if established.get(inode, set()) & ports:
                return True
    return False


# --- progress -------------------------------------------------------------------------------
def worker_state_dir() -> Path:
    """Where the workers write their progress reports (eco2/worker_watch.py, the settings'
    WORKER_STATE_DIR)."""
    if os.environ.get("WORKER_STATE_DIR"):
        return Path(os.environ["WORKER_STATE_DIR"])
    var = os.environ.get("ECO2_VAR_DIR") or Path(__file__).resolve().parent.parent / "var"
    return Path(var) / "state" / "workers"


def stalled_workers(directory: Path, proc: Path = PROC, now: float | None = None) -> list[str]:
    """Why each worker of this host is stalled, from its progress report. A stopped (SIGSTOP,
    traced) worker counts: it is the frozen process whose report goes stale."""
    now = time.time() if now is None else now
    live = set(find_process(["celery", "worker"], proc, bad_states={"Z", "X", "x"}))
    problems = []
    for path in sorted(directory.glob("*.json")):
        try:
            report = json.loads(path.read_text())
            pid, name = int(report["pid"]), report["nodename"]
            silent = now - float(report["written_at"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pid not in live:
            continue  # a worker that has exited (or not ours)
        if silent > float(report.get("stale_after", 60)):
            problems.append(f"{name}: its progress watch has not reported for {silent:.0f} s")
        elif report.get("stalled"):
            problems.append(f"{name}: {report.get('reason') or 'stalled'}")
    return problems


def check_worker(
    broker_url: str,
    process_only: bool = False,
    proc: Path = PROC,
    state: Path | None = None,
) -> str | None:
    pids = worker_pids(proc)
    if not pids:
        return "no running `celery worker` process"
    stalled = stalled_workers(state or worker_state_dir(), proc)
    if stalled:
        return "stalled worker: " + "; ".join(stalled)
    if process_only:
        return None
    ports = broker_ports(broker_url)
    if not ports:
        return None  # not an AMQP broker: nothing to be connected to
    if not connected_to(pids, ports, proc):
        return f"the worker has no ESTABLISHED connection to the broker (port {sorted(ports)})"
    return None


# --- command line ---------------------------------------------------------------------------
USAGE = (
    "usage: healthcheck.py http PATH [--port N] | flower | worker [--process-only] | "
    "process WORD..."
)


def main(argv: list[str]) -> int:
    if not argv:
        print(USAGE)
        return 2
    mode, args = argv[0], argv[1:]
    host = os.environ.get("HEALTHCHECK_HOST", "localhost")
    if mode == "http" and args:
        port = int(os.environ.get("PORT", "8000"))
        if "--port" in args:
            port = int(args[args.index("--port") + 1])
        problem = check_http(args[0], port, host)
    elif mode == "flower":
        prefix = os.environ.get("FLOWER_URL_PREFIX", "").strip("/")
        path = f"/{prefix}/healthcheck" if prefix else "/healthcheck"
        problem = check_http(path, int(os.environ.get("FLOWER_PORT", "5555")), host)
    elif mode == "worker":
        problem = check_worker(
            os.environ.get("CELERY_BROKER_URL", ""), process_only="--process-only" in args
        )
    elif mode == "process" and args:
        problem = None if find_process(args) else f"no running process with {' '.join(args)}"
    else:
        print(USAGE)
        return 2
    if problem:
        print(f"unhealthy: {problem}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
