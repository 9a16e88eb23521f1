"""Text from the controller made safe to print on a terminal.

Task commands, device names, reasons and task output come from the controller, and so, in the
end, from whoever sent them: a paired phone, or a task. Printed as they are, an escape sequence
could clear or retitle the owner's terminal, or rewrite what an earlier line said, and a Unicode
bidirectional override could make `rm -rf ~ #safe` read as something else. `safe` shows such
characters as escapes (`\\x1b`, `\\u202e`) instead.
"""

from __future__ import annotations

import re

# C0 controls, DEL and C1 controls (U+009B is a one-character CSI on some terminals), then the
# characters that reorder text: the Arabic letter mark, LRM/RLM, the embeddings and overrides
# U+202A-U+202E and the isolates U+2066-U+2069.
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}]")
# In task output, line breaks and tabs are the text's layout; a carriage return is kept only
# as part of CRLF, since alone it lets a later line print over an earlier one.
UNSAFE_IN_OUTPUT = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_BIDI}]|\r(?!\n)")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: str) -> str:
    """`text` with every control (line breaks and tabs too) and bidi character escaped."""
    return UNSAFE.sub(_escape, text)


def safe_output(text: str) -> str:
    """Task output for a terminal: like `safe`, but keeping line breaks and tabs."""
    return UNSAFE_IN_OUTPUT.sub(_escape, text)
