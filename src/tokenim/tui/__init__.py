"""`tokenim chat`: the terminal app (Textual) on the SDK. Layering: tui -> client, like cli; cli starts it."""

from tokenim.tui.app import ChatApp
from tokenim.tui.notify import NotifyMode

__all__ = ["ChatApp", "NotifyMode"]
