"""Test doubles shipped with the package: the scripted fake Messages API (`fake_model`)."""
