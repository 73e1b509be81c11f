"""`tokenim chat`: the terminal app (Textual) on the SDK. Layering: tui -> client, like cli; cli starts it.

Where things go: what the app knows (rooms, unread counts, timelines) in model.py; how a message or a room
is drawn in text.py (Rich `Text` from plain strings, never markup); what a key or a `/command` does in
commands.py (the table the help and docs/cli.md show) and actions.py (`do_<name>`, through the SDK); what
the connection brings in live.py. Replies, edits, reactions, receipts and typing notices (issue 10,
point 2) slot in as a row in commands.py with its `do_` action, a case in `message_text`, and, for
events the SDK's stream will carry, a case in `ChatApp.arrived`.
"""

from tokenim.tui.app import ChatApp
from tokenim.tui.notify import NotifyMode

__all__ = ["ChatApp", "NotifyMode"]
