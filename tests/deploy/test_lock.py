"""The lock (requirements/): pyproject.toml's ranges pinned with the hashes of every file, what
`make install` and the Dockerfile install with --require-hashes, and `make audit`'s verdict
(requirements/audit.py), with pip-audit itself against a fake advisory feed."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.helpers import ROOT, dockerfile_instructions

RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
DEV_LOCK = ROOT / "requirements" / "dev.txt"
ACCEPTED = ROOT / "requirements" / "audit-accepted.txt"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def load_audit():
    spec = importlib.util.spec_from_file_location("eco2_audit", ROOT / "requirements" / "audit.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


audit = load_audit()


def read_lock(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """{canonical name: (version, its hashes)} of a pip-compile lock."""
    entries: dict[str, tuple[str, frozenset[str]]] = {}
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *options = line.split()
        name, _, version = requirement.partition("==")
        assert version, f"{path.name}: not pinned: {line}"
        hashes = frozenset(o.removeprefix("--hash=") for o in options if o.startswith("--hash="))
        entries[canonicalize_name(name)] = (version, hashes)
    return entries


# --- the lock files -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lock", "groups"),
    [(RUNTIME_LOCK, ["dependencies"]), (DEV_LOCK, ["dependencies", "dev"])],
    ids=["runtime", "dev"],
)
def test_the_lock_pins_every_dependency_of_pyproject_within_its_range(lock, groups):
    """Fails when pyproject.toml gained a dependency or changed a range without `make lock`."""
    pins = read_lock(lock)
    environment = {**default_environment(), "python_version": "3.11", "sys_platform": "linux"}
    declared = PYPROJECT["dependencies"] + (
        PYPROJECT["optional-dependencies"]["dev"] if "dev" in groups else []
    )
    for line in declared:
        requirement = Requirement(line)
        if requirement.marker and not requirement.marker.evaluate(environment):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in {lock.name}: run `make lock`"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (
            f"{lock.name} pins {name}=={pins[name][0]}, outside {requirement}: run `make lock`"
        )


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, DEV_LOCK], ids=["runtime", "dev"])
def test_every_pin_has_hashes_and_the_lock_names_no_local_source(lock):
    pins = read_lock(lock)
    assert len(pins) > 50
    for name, (_, hashes) in pins.items():
        assert hashes and all(h.startswith("sha256:") for h in hashes), f"{name} has no hash"
    text = "\n".join(line.split("#", 1)[0] for line in lock.read_text().splitlines())
    for option in ("--find-links", "--index-url", "--extra-index-url", "file:", "-e "):
        assert option not in text, f"{lock.name} names {option}"


def test_the_runtime_lock_is_the_dev_lock_s_runtime_part():
    """Docker installs the runtime lock, make the dev lock: the same files where they meet."""
    runtime, dev = read_lock(RUNTIME_LOCK), read_lock(DEV_LOCK)
    assert runtime.keys() <= dev.keys()
    assert {n: runtime[n] for n in runtime} == {n: dev[n] for n in runtime}
    for tool in ("pytest", "mypy", "pip-tools", "pip-audit"):
        assert tool in dev and tool not in runtime


# --- the Makefile and the Dockerfile install from it ----------------------------------------
def _make_dry_run(venv: Path, *targets: str) -> str:
    completed = subprocess.run(
        ["make", "--no-print-directory", "-n", f"VENV={venv}", *targets],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return completed.stdout


def test_make_install_reinstalls_from_the_lock_with_hashes_when_the_lock_changes(tmp_path):
    venv = tmp_path / "venv"
    venv.mkdir()
    stamps = [venv / ".locked", venv / ".installed"]
    for stamp in stamps:
        stamp.touch()
    newest = max(DEV_LOCK.stat().st_mtime, (ROOT / "pyproject.toml").stat().st_mtime)
    for stamp in stamps:
        os.utime(stamp, (newest + 10, newest + 10))
    assert "pip install" not in _make_dry_run(venv, "install")

    older = DEV_LOCK.stat().st_mtime - 10
    os.utime(venv / ".locked", (older, older))  # the lock changed since
    commands = _make_dry_run(venv, "install")
    installs = [line for line in commands.splitlines() if "/pip install " in line]
    assert any(f"-r {DEV_LOCK.relative_to(ROOT)}" in line for line in installs), commands
    for line in installs:
        # pip's configuration (find-links to local wheels, constraints) is ignored
        assert "PIP_CONFIG_FILE=/dev/null" in line and "-u PIP_FIND_LINKS" in line, line
        assert "--no-deps" in line, line
    assert sum("--require-hashes" in line for line in installs) == 2  # pip first, then the rest
    assert "pip check" in commands


def test_make_test_runs_the_audit_and_make_lock_regenerates_both_locks(tmp_path):
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:.*\baudit\b", makefile, re.M)
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".locked").touch()
    lock = _make_dry_run(venv, "-o", str(venv / ".locked"), "lock")
    assert "--generate-hashes" in lock and "--output-file=requirements/runtime.txt" in lock
    assert "--constraint=requirements/runtime.txt --output-file=requirements/dev.txt" in lock


def test_the_image_installs_the_runtime_lock_with_hashes():
    runs = [rest for keyword, rest in dockerfile_instructions() if keyword == "RUN"]
    copies = [rest for keyword, rest in dockerfile_instructions() if keyword == "COPY"]
    assert any(rest.startswith("requirements/runtime.txt ") for rest in copies)
    install = next(run for run in runs if "--require-hashes" in run)
    assert "--no-deps -r runtime.txt" in install
    assert not re.search(r"pip install (--\S+ )*\.(\s|$)", " ".join(runs)), "installs pyproject"


# --- make audit: the accept-list and the verdict --------------------------------------------
def test_the_committed_accept_list_parses():
    audit.parse_accepted(ACCEPTED.read_text())


def test_an_accept_list_line_needs_an_id_a_date_and_a_reason():
    accepted = audit.parse_accepted(
        "# comment\n\nGHSA-abcd-efgh-ijkl  2026-12-06  dev only, never sees user input  # note\n"
    )
    entry = accepted["GHSA-abcd-efgh-ijkl"]
    assert str(entry.accepted_on) == "2026-12-06" and entry.reason.startswith("dev only")
    for bad in ("GHSA-abcd-efgh-ijkl 2026-12-06", "GHSA-abcd 06/12/2026 why", "just words"):
        with pytest.raises(audit.AcceptListError, match="line 1"):
            audit.parse_accepted(bad)


def _report(*dependencies: dict) -> dict:
    return {"dependencies": list(dependencies), "fixes": []}


VULNERABLE_DJANGO = {
    "name": "django",
    "version": "5.2.19",
    "vulns": [
        {
            "id": "PYSEC-2026-1",
            "fix_versions": ["5.2.20"],
            "aliases": ["CVE-2026-0001", "GHSA-aaaa-bbbb-cccc"],
            "description": "SQL injection in something",
        }
    ],
}
CLEAN_CELERY = {"name": "celery", "version": "5.7.0", "vulns": []}
SKIPPED = {"name": "kombu", "skip_reason": "Dependency not found on PyPI and could not be audited"}


def test_a_vulnerability_fails_unless_accepted_by_its_id_or_an_alias():
    verdict = audit.judge(_report(VULNERABLE_DJANGO, CLEAN_CELERY), {}, required=False)
    assert verdict.status == audit.VULNERABLE
    assert any("VULNERABLE django 5.2.19: PYSEC-2026-1" in line for line in verdict.lines)
    assert any("fixed in 5.2.20" in line for line in verdict.lines)

    accepted = audit.parse_accepted("CVE-2026-0001 2026-12-06 not reachable from our views")
    verdict = audit.judge(_report(VULNERABLE_DJANGO, CLEAN_CELERY), accepted, required=True)
    assert verdict.status == 0
    assert any("accepted PYSEC-2026-1" in line for line in verdict.lines)
    assert any("2 packages audited" in line for line in verdict.lines)


def test_not_audited_warns_loudly_and_fails_only_when_the_audit_is_required():
    everything_skipped = _report(SKIPPED, {**SKIPPED, "name": "celery"})
    warned = audit.judge(everything_skipped, {}, required=False)
    assert warned.status == 0
    assert any("advisory service unreachable, not audited" in line for line in warned.lines)
    assert any("NOT audited" in line for line in warned.lines)
    assert audit.judge(everything_skipped, {}, required=True).status == audit.NOT_AUDITED
    no_report = audit.judge(None, {}, required=True, failure="ConnectionError: api.osv.dev")
    assert no_report.status == audit.NOT_AUDITED
    assert any("ConnectionError: api.osv.dev" in line for line in no_report.lines)
    # a vulnerability found among skipped packages still fails, required or not
    assert audit.judge(_report(VULNERABLE_DJANGO, SKIPPED), {}, required=False).status == 1


# --- make audit end to end: pip-audit against a fake advisory feed ---------------------------
FAKE_FEED = """
import json, os
import requests

_feed = json.loads(os.environ["FAKE_ADVISORY_FEED"])
_send = requests.Session.send


def send(self, request, **kwargs):
    if not request.url.startswith("https://pypi.org/pypi/"):
        return _send(self, request, **kwargs)
    if _feed["mode"] == "down":
        raise requests.ConnectionError("fake feed: no route to pypi.org")
    name = request.url.split("/")[4]
    response = requests.Response()
    response.url, response.request = request.url, request
    response.headers["Content-Type"] = "application/json"
    if _feed["mode"] == "404":  # this machine: the per-version JSON is not served
        response.status_code, response._content = 404, b"{}"
    else:
        response.status_code = 200
        body = {"info": {"name": name}, "vulnerabilities": _feed["vulns"].get(name, [])}
        response._content = json.dumps(body).encode()
    return response


requests.Session.send = send
"""


def _run_audit(tmp_path, monkeypatch, capsys, *, mode, vulns=None, accepted="", required=""):
    pytest.importorskip("pip_audit")
    fake = tmp_path / "fake"
    fake.mkdir(exist_ok=True)
    (fake / "sitecustomize.py").write_text(FAKE_FEED)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FAKE_ADVISORY_FEED", json.dumps({"mode": mode, "vulns": vulns or {}}))
    monkeypatch.setenv("AUDIT_REQUIRED", required)
    # a two-package lock cut from the real one
    text = DEV_LOCK.read_text().replace("\\\n", "")
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "\n".join(
            line.split("#")[0]
            for line in text.splitlines()
            if line.startswith(("django==", "celery=="))
        )
        + "\n"
    )
    accept_list = tmp_path / "accepted.txt"
    accept_list.write_text(accepted)
    status = audit.main(["--lock", str(lock), "--accepted", str(accept_list)])
    return status, capsys.readouterr().err


ADVISORY = {
    "id": "PYSEC-2026-1",
    "aliases": ["CVE-2026-0001"],
    "summary": "a fake advisory",
    "fixed_in": ["5.2.99"],
    "details": "",
    "link": "https://example.invalid",
    "source": "osv",
    "withdrawn": None,
}


def test_make_audit_fails_on_a_vulnerability_the_feed_reports(tmp_path, monkeypatch, capsys):
    status, err = _run_audit(tmp_path, monkeypatch, capsys, mode="ok", vulns={"django": [ADVISORY]})
    assert status == audit.VULNERABLE, err
    assert "VULNERABLE django" in err and "PYSEC-2026-1" in err and "5.2.99" in err


def test_make_audit_passes_a_vulnerability_on_the_accept_list(tmp_path, monkeypatch, capsys):
    status, err = _run_audit(
        tmp_path,
        monkeypatch,
        capsys,
        mode="ok",
        vulns={"django": [ADVISORY]},
        accepted="CVE-2026-0001  2026-12-06  fake: the feature is not used\n",
        required="1",
    )
    assert status == 0, err
    assert "accepted PYSEC-2026-1" in err and "2 packages audited" in err


@pytest.mark.parametrize("mode", ["404", "down"])
def test_make_audit_without_the_feed_warns_or_fails_when_required(
    tmp_path, monkeypatch, capsys, mode
):
    status, err = _run_audit(tmp_path, monkeypatch, capsys, mode=mode)
    assert status == 0, err
    assert "advisory service unreachable, not audited" in err
    status, err = _run_audit(tmp_path, monkeypatch, capsys, mode=mode, required="1")
    assert status == audit.NOT_AUDITED, err
