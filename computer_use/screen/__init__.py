"""The computer tool: the `Screen` protocol and frames, scaling, keys, the X11 driver, the
desktop sandbox's screen, and the SDK toolset on top of them."""
