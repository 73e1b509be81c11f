"""The wire format: request, response and key-object types shared by server and client."""

PROTOCOL_VERSION = "v1"
