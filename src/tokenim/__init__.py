"""TokenIM: a self-hosted, end-to-end encrypted messenger for companies."""

__version__ = "0.1.0"
