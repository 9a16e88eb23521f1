"""The agent loop over the SDK's tool runner, and the tools that need no screen: the shell and
file edits inside the sandbox, and the memory tool."""
