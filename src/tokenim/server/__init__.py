"""The TokenIM server: thin ASGI routes over services over storage. Never imports `tokenim.crypto`."""
