"""The policy's member lists are written out (the SDK's types are slow to import): kept equal."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

from anthropic.types.beta import BetaBrowserMemberName, BetaComputerMemberName

from computer_use.approval.policy import BROWSER_MEMBERS, COMPUTER_MEMBERS


def test_the_member_lists_are_the_installed_sdks() -> None:
    # A member the SDK adds must be classified here (read-only or with an effect) to be allowed.
    assert frozenset(get_args(BetaComputerMemberName)) == COMPUTER_MEMBERS
    assert frozenset(get_args(BetaBrowserMemberName)) == BROWSER_MEMBERS


def test_the_policy_imports_without_the_sdk() -> None:
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, computer_use.approval.policy; print('anthropic' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "False"
