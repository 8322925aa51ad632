"""The user-facing error type: what every command raises for input or an environment the user can fix."""
from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment; the message says how to fix it."""
