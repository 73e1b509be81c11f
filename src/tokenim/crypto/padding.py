"""Padding of Megolm plaintext to size buckets, so a message's ciphertext length says little about its length.

The plaintext is a JSON object followed by ASCII spaces up to the bucket size. JSON allows trailing
whitespace, so a padded message parses unchanged (older clients read it as before) and an unpadded
one from an older client is read as it is. Buckets are powers of two from 256 bytes; the top bucket
is capped so that a message that fits the server's content limit unpadded still fits padded.
"""

from __future__ import annotations

from tokenim.protocol.events import MAX_CONTENT_BYTES

MIN_BUCKET = 256
# The server's limit counts the characters of every string in the content (docs/protocol.md): the other
# fields are the algorithm (26), session id (43), sender key (43) and device id (at most 32). The ciphertext
# is base64 (4 characters per 3 bytes) of Megolm's framing (version 1, index up to 6, length up to 4),
# the AES-CBC output (the plaintext plus 1 to 16 bytes of padding), an 8-byte MAC and a 64-byte signature.
_OTHER_FIELDS = 26 + 43 + 43 + 32
_MEGOLM_OVERHEAD = 1 + 6 + 4 + 8 + 64
MAX_PADDED = ((MAX_CONTENT_BYTES - _OTHER_FIELDS) * 3 // 4 - _MEGOLM_OVERHEAD) // 16 * 16 - 1


def padded_length(n: int) -> int:
    """The bucket for a plaintext of `n` bytes: the next power of two (at least 256), at most MAX_PADDED.

    A plaintext already longer than MAX_PADDED is left as it is: the server's limit decides about it.
    """
    if n >= MAX_PADDED:
        return n
    bucket = MIN_BUCKET
    while bucket < n:
        bucket *= 2
    return min(bucket, MAX_PADDED)


def pad(plaintext: bytes) -> bytes:
    """`plaintext` (a JSON text) followed by spaces up to its bucket."""
    return plaintext + b" " * (padded_length(len(plaintext)) - len(plaintext))


def unpad(plaintext: bytes) -> bytes:
    """The JSON text without its padding (a no-op for unpadded messages)."""
    return plaintext.rstrip(b" ")
