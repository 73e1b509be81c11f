"""Padding of Megolm plaintext to size buckets, so a message's ciphertext length says little about its length.

The plaintext is a JSON object followed by ASCII spaces up to the bucket size. JSON allows trailing
whitespace, so a padded message parses unchanged (older clients read it as before) and an unpadded
one from an older client is read as it is. Buckets are powers of two from 256 bytes; the top bucket
is capped so that a message that fits the server's content limit unpadded still fits padded.
"""

from __future__ import annotations

from tokenim.protocol.events import MAX_CONTENT_BYTES

MIN_BUCKET = 256
# Room for the other content fields (algorithm, session id, sender key, device id: under 200 characters),
# then base64 (4 characters per 3 bytes), then Megolm's own framing, MAC and signature (under 128 bytes).
_OTHER_FIELDS = 256
_MEGOLM_OVERHEAD = 128
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
