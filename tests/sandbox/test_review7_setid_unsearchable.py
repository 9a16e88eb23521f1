"""Review 7 (hostile; failed before its fix).

a setuid file in a folder the task made readable but not searchable (chmod 444) is
passed over in silence.

The walk lists the folder (listing needs only r), so the file is among `files`; strip_setid's
`os.lstat(path)` then fails with EACCES (no x on the folder) and `continue`s (setid.py:70-72):
no bit stripped, no SetidScanIncomplete. The existing test covers chmod 000 only. The host side
runs as the folder's owner (the sandbox's uid), as in tests/sandbox/test_setid.py.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from sandbox.host.setid import strip_setid
from tests.sandbox.test_setid import _as_owner


def test_review7_setuid_file_in_a_listable_unsearchable_folder(workspace: Path) -> None:
    root = workspace / "rw"
    (root / "hidden").mkdir(parents=True)
    since = time.time()
    tool = root / "hidden" / "tool"
    tool.write_text("x")
    for path in (root, root / "hidden", tool):
        os.chown(path, 4321, 4321)
    os.chmod(tool, 0o4755)
    os.chmod(root / "hidden", 0o444)
    code = _as_owner(lambda: print(strip_setid([root], since=since)))
    kept = os.lstat(tool).st_mode & stat.S_ISUID
    # 0 with the bit kept: passed over in silence. (2/3: said it could not search; fine.)
    assert code in (2, 3) or not kept, f"exit {code}, setuid bit kept"
