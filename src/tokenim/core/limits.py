"""Protocol-wide size limits, shared by server and client so both agree what is too big."""

MAX_BODY_BYTES = 256 * 1024
MAX_ONE_TIME_KEYS_PER_UPLOAD = 100
MAX_ONE_TIME_KEYS_STORED = 200
ONE_TIME_KEY_TARGET = 50
MAX_USERS_PER_QUERY = 100
MAX_DEVICES_PER_USER = 50
CHALLENGE_TTL_MS = 60_000
ACCESS_TOKEN_TTL_MS = 60 * 60 * 1000
REFRESH_TOKEN_TTL_MS = 30 * 24 * 60 * 60 * 1000
DEFAULT_INVITE_TTL_MS = 7 * 24 * 60 * 60 * 1000
# The largest stream position or id a client may name: 2^53 - 1, the largest integer every JSON
# implementation (JavaScript's numbers, JSON Schema validators using doubles) holds exactly; a BIGINT holds it.
MAX_POSITION = 2**53 - 1
