"""`make audit`: pip-audit against the lock, with the accept-list, and a verdict CI can act on.

pip-audit reads the hashed lock (``-r requirements/dev.txt --require-hashes``, no resolver, no
virtualenv of its own) and asks PyPI's advisory feed about each pinned version. Its JSON report
is judged here rather than by its exit status, because pip-audit reports a package it could not
look up as "skipped" and then says "No known vulnerabilities found" with exit status 0: with no
route to the feed nothing is audited and the run looks clean.

The verdict, also the exit status:
  0  audited, every vulnerability found is in the accept-list; or not audited (the advisory
     service unreachable) without AUDIT_REQUIRED=1, with a loud warning
  1  a vulnerability that the accept-list does not accept
  2  not audited and AUDIT_REQUIRED=1 (what ``--strict`` would do, with the reason)
  3  the accept-list is malformed

The accept-list (requirements/audit-accepted.txt): one vulnerability a line,
``ID  YYYY-MM-DD  reason``: the id pip-audit prints (PYSEC-…, GHSA-… or CVE-…; an alias
matches too), the day it was accepted, and why it does not affect Eco² or when it will be
fixed. ``#`` starts a comment.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

VULNERABLE, NOT_AUDITED, BAD_ACCEPT_LIST = 1, 2, 3
_ACCEPTED_LINE = re.compile(r"^(?P<id>[A-Z][A-Z0-9]*-[\w-]+)\s+(?P<date>\S+)\s+(?P<reason>\S.*)$")


class AcceptListError(ValueError):
    """A line of the accept-list without an id, a valid date and a reason."""


@dataclass(frozen=True)
class Accepted:
    id: str
    accepted_on: dt.date
    reason: str


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    id: str
    aliases: tuple[str, ...]
    fix_versions: tuple[str, ...]
    description: str

    def ids(self) -> set[str]:
        return {self.id, *self.aliases}


@dataclass(frozen=True)
class Verdict:
    status: int
    lines: tuple[str, ...]


def parse_accepted(text: str) -> dict[str, Accepted]:
    """The accept-list's entries by id; AcceptListError names the first bad line."""
    accepted: dict[str, Accepted] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ACCEPTED_LINE.match(line)
        if not match:
            raise AcceptListError(f"line {number}: expected 'ID YYYY-MM-DD reason': {raw!r}")
        try:
            accepted_on = dt.date.fromisoformat(match["date"])
        except ValueError:
            raise AcceptListError(
                f"line {number}: not a date (YYYY-MM-DD): {match['date']!r}"
            ) from None
        accepted[match["id"]] = Accepted(match["id"], accepted_on, match["reason"].strip())
    return accepted


def findings(report: dict) -> tuple[list[Finding], list[str]]:
    """(the vulnerabilities of pip-audit's JSON report, the reasons of the packages skipped)."""
    found: list[Finding] = []
    skipped: list[str] = []
    for dependency in report.get("dependencies", []):
        if "skip_reason" in dependency:
            skipped.append(f"{dependency['name']}: {dependency['skip_reason']}")
            continue
        for vuln in dependency.get("vulns", []):
            found.append(
                Finding(
                    package=dependency["name"],
                    version=dependency.get("version", "?"),
                    id=vuln["id"],
                    aliases=tuple(vuln.get("aliases", ())),
                    fix_versions=tuple(vuln.get("fix_versions", ())),
                    description=vuln.get("description", ""),
                )
            )
    return found, skipped


def judge(
    report: dict | None, accepted: dict[str, Accepted], *, required: bool, failure: str = ""
) -> Verdict:
    """The verdict on pip-audit's report (None: pip-audit wrote none, ``failure`` says why)."""
    lines: list[str] = []
    if report is None:
        found: list[Finding] = []
        skipped = [failure or "pip-audit wrote no report"]
        audited = 0
    else:
        found, skipped = findings(report)
        audited = len(report.get("dependencies", [])) - len(skipped)
    unaccepted = [f for f in found if not f.ids() & accepted.keys()]
    for finding in found:
        match = sorted(finding.ids() & accepted.keys())
        fixed_in = ", ".join(finding.fix_versions) or "no fixed release"
        if match:
            entry = accepted[match[0]]
            lines.append(
                f"pip-audit: accepted {finding.id} in {finding.package} {finding.version} "
                f"(on {entry.accepted_on}: {entry.reason})"
            )
        else:
            lines.append(
                f"pip-audit: VULNERABLE {finding.package} {finding.version}: {finding.id} "
                f"({', '.join(finding.aliases) or 'no alias'}); fixed in {fixed_in}. "
                f"{finding.description[:300]}"
            )
    if skipped:
        lines.append(
            f"pip-audit: advisory service unreachable, not audited ({len(skipped)} "
            f"package(s), {audited} audited): {skipped[0]}"
        )
    if unaccepted:
        lines.append(
            f"pip-audit: {len(unaccepted)} known vulnerabilit{'y' if len(unaccepted) == 1 else 'ies'}"
            " in the lock: upgrade (make lock LOCK_ARGS='-P <package>'), or accept it in"
            " requirements/audit-accepted.txt with a reason"
        )
        return Verdict(VULNERABLE, tuple(lines))
    if skipped:
        if required:
            lines.append("pip-audit: AUDIT_REQUIRED=1, so this fails")
            return Verdict(NOT_AUDITED, tuple(lines))
        lines.append(
            "pip-audit: WARNING: the lock was NOT audited (set AUDIT_REQUIRED=1 where the "
            "advisory service is reachable to make this fail)"
        )
        return Verdict(0, tuple(lines))
    lines.append(f"pip-audit: {audited} packages audited, no unaccepted vulnerability")
    return Verdict(0, tuple(lines))


def run_pip_audit(lock: Path, command: Sequence[str]) -> tuple[dict | None, str]:
    """pip-audit's JSON report on ``lock`` (None if it wrote none) and its stderr's last line."""
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / "report.json"
        completed = subprocess.run(  # noqa: S603 (our own command line)
            [
                *command,
                "--requirement",
                str(lock),
                "--require-hashes",
                "--disable-pip",
                "--format=json",
                "--aliases=on",
                "--desc=on",
                "--progress-spinner=off",
                f"--output={output}",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        errors = [line for line in completed.stderr.splitlines() if line.strip()]
        last = errors[-1] if errors else f"pip-audit exited with status {completed.returncode}"
        try:
            return json.loads(output.read_text()), last
        except (OSError, ValueError):
            return None, last


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--lock", type=Path, default=Path("requirements/dev.txt"))
    parser.add_argument("--accepted", type=Path, default=Path("requirements/audit-accepted.txt"))
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        accepted = parse_accepted(args.accepted.read_text())
    except (OSError, AcceptListError) as exc:
        print(f"pip-audit: {args.accepted}: {exc}", file=sys.stderr)
        return BAD_ACCEPT_LIST
    report, failure = run_pip_audit(args.lock, [sys.executable, "-m", "pip_audit"])
    verdict = judge(
        report, accepted, required=os.environ.get("AUDIT_REQUIRED") == "1", failure=failure
    )
    for line in verdict.lines:
        print(line, file=sys.stderr)
    return verdict.status


if __name__ == "__main__":
    sys.exit(main())
