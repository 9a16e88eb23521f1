"""Computer use: the approval policy, the screen and browser drivers, and the agent loop.

`policy` decides allow/ask/deny per tool call; `testing.fake_model` is the scripted fake Messages
API the tests run the real `anthropic` client against.
"""
