"""The web console: server-rendered pages for a phone (and a desktop), signed in by pairing."""
