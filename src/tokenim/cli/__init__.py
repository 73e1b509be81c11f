"""The `tokenim` command line: every command is built on the client SDK (and `serve` on the server)."""
