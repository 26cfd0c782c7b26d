"""`make check-deploy` runs the deployment-file tests (tests/deploy/)."""

from __future__ import annotations

import re

from tests.deploy.helpers import ROOT


# --- make check-deploy ----------------------------------------------------------------------
def test_make_check_deploy_runs_these_tests():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^check-deploy:", makefile, re.M)
    assert "tests/deploy/" in makefile
