"""Headless runs (`dispatch run`): task files run in process with a policy for a person."""
