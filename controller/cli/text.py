"""Printing text that others control (task commands, names, the model's words) safely."""

from __future__ import annotations

BIDI = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def safe(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with control and bidirectional-override characters shown as escapes."""
    out = []
    for ch in text:
        code = ord(ch)
        if keep_newlines and ch in "\n\t":
            out.append(ch)
        elif code < 32 or 0x7F <= code < 0xA0 or code in BIDI:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
