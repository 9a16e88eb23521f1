"""The browser tool: Chromium through Playwright, fenced to the task's allowed domains, and
the bridge to a Chromium inside the desktop sandbox."""
