"""A tiny Tk window at known screen places that logs what it receives, for the display tests.

Run as `python probe_app.py EVENTS_FILE WIDTH HEIGHT`: one JSON object per line in EVENTS_FILE,
`{"type": "ready"}` first. No window manager is needed: the window sits at +0+0 undecorated.
"""

from __future__ import annotations

import json
import sys
import tkinter as tk

# Screen-pixel geometry the tests aim at (all inside 1024x768, the smallest screen tested).
BUTTON = (200, 150, 160, 60)  # x, y, width, height
BUTTON_COLOUR = "#3060c0"
CLICKED_COLOUR = "#20c040"
PAD = (500, 100, 400, 400)  # the canvas that logs clicks, drags and wheel turns
RED_SQUARE = (100, 400, 40, 40)


def main() -> None:
    path, width, height = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    out = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the window

    def log(kind: str, **fields: object) -> None:
        out.write(json.dumps({"type": kind, **fields}) + "\n")

    root = tk.Tk()
    root.geometry(f"{width}x{height}+0+0")
    root.configure(bg="#f0f0f0")

    def clicked() -> None:
        button.configure(bg=CLICKED_COLOUR, activebackground=CLICKED_COLOUR)
        log("button")

    x, y, w, h = BUTTON
    button = tk.Button(
        root,
        text="Press me",
        bg=BUTTON_COLOUR,
        activebackground=BUTTON_COLOUR,
        command=clicked,
        relief="flat",
        highlightthickness=0,
        bd=0,
    )
    button.place(x=x, y=y, width=w, height=h)

    x, y, w, h = PAD
    pad = tk.Canvas(root, bg="white", highlightthickness=0, bd=0)
    pad.place(x=x, y=y, width=w, height=h)

    def pointer(kind: str):  # type: ignore[no-untyped-def]
        return lambda e: log(kind, x=e.x_root, y=e.y_root, state=e.state)

    for sequence, kind in [
        ("<ButtonPress-1>", "press1"),
        ("<ButtonRelease-1>", "release1"),
        ("<ButtonPress-2>", "press2"),
        ("<ButtonPress-3>", "press3"),
        ("<Double-Button-1>", "double"),
        ("<Triple-Button-1>", "triple"),
        ("<B1-Motion>", "drag_motion"),
        ("<Button-4>", "wheel_up"),
        ("<Button-5>", "wheel_down"),
    ]:
        pad.bind(sequence, pointer(kind), add="+")

    x, y, w, h = RED_SQUARE
    tk.Frame(root, bg="#ff0000").place(x=x, y=y, width=w, height=h)

    root.bind_all("<KeyPress>", lambda e: log("key_down", keysym=e.keysym, state=e.state))
    root.bind_all("<KeyRelease>", lambda e: log("key_up", keysym=e.keysym, state=e.state))
    root.bind_all("<Control-s>", lambda e: log("ctrl_s"))

    def ready() -> None:
        root.focus_force()
        log("ready")

    root.after(200, ready)
    root.mainloop()


if __name__ == "__main__":
    main()
