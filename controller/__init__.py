"""The Dispatch controller: HTTP API, store, queue, workers, auth, and the `dispatch` CLI."""
