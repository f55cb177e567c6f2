"""An independent implementation of mesh-crypto v1 (docs/PROTOCOL.md) on libsodium via PyNaCl.

Written from the protocol document, not from the Rust code: it is what a third-party client
would write. Used by crypto_interop.py (vectors, both directions) and bench_crypto.py (baseline).
"""

import struct

import nacl.bindings as s
from nacl.encoding import RawEncoder
from nacl.hash import blake2b

ENVELOPE_VERSION = 1
HEADER_LEN = 125
TAG_LEN = 16
SIG_LEN = 64
ENVELOPE_DOMAIN = b"mesh/envelope/v1"
KEY_LABEL = b"mesh/envelope/v1/key"
SIGNED_VERSION = 1
SIGNED_HEADER_LEN = 53
MAX_PLAINTEXT_LEN = 16 * 1024 * 1024
SAFETY_ITERATIONS = 5200
B32 = "abcdefghijklmnopqrstuvwxyz234567"


class EnvelopeError(Exception):
    """Carries the name of the check that failed, spelled as the Rust error variants."""


def h256(data, key=b""):
    return blake2b(data, digest_size=32, key=key, encoder=RawEncoder)


def domain_hash(domain, *parts):
    d = domain.encode() if isinstance(domain, str) else domain
    return h256(bytes([len(d)]) + d + b"".join(parts))


def keypair(seed):
    """(ed25519 public, ed25519 secret (64 bytes), x25519 public, x25519 secret)."""
    pk, sk = s.crypto_sign_seed_keypair(seed)
    return pk, sk, s.crypto_sign_ed25519_pk_to_curve25519(pk), s.crypto_sign_ed25519_sk_to_curve25519(sk)


def sign_digest(sk, digest):
    return s.crypto_sign(digest, sk)[:SIG_LEN]


def verify_digest(pk, digest, sig):
    try:
        s.crypto_sign_open(sig + digest, pk)
        return True
    except Exception:  # noqa: BLE001 - any failure is a bad signature
        return False


def base32(data):
    bits, value, out = 0, 0, []
    for byte in data:
        value = (value << 8) | byte
        bits += 8
        while bits >= 5:
            out.append(B32[(value >> (bits - 5)) & 31])
            bits -= 5
    if bits:
        out.append(B32[(value << (5 - bits)) & 31])
    return "".join(out)


def peer_id_text(pk):
    return base32(pk)


def fingerprint(pk):
    text = base32(domain_hash("mesh/fingerprint/v1", pk)[:10])
    return "-".join(text[i:i + 4] for i in range(0, len(text), 4))


def safety_digits(pk):
    digest = domain_hash("mesh/safety-number/v1", pk)
    for _ in range(SAFETY_ITERATIONS):
        digest = h256(digest + pk)
    return "".join("%05d" % (int.from_bytes(digest[i:i + 5], "big") % 100000) for i in range(0, 30, 5))


def safety_number(pk_a, pk_b):
    a, b = safety_digits(pk_a), safety_digits(pk_b)
    return min(a, b) + max(a, b)


def envelope_key(shared, eph_pub, recipient_x, context):
    return h256(KEY_LABEL + bytes([len(context)]) + context + eph_pub + recipient_x, key=shared)


def seal(sender_sk, sender_pk, recipient_pk, context, plaintext, eph_secret, nonce):
    recipient_x = s.crypto_sign_ed25519_pk_to_curve25519(recipient_pk)
    eph_pub = s.crypto_scalarmult_base(eph_secret)
    shared = s.crypto_scalarmult(eph_secret, recipient_x)
    key = envelope_key(shared, eph_pub, recipient_x, context)
    header = (bytes([ENVELOPE_VERSION]) + sender_pk + recipient_pk + eph_pub + nonce
              + struct.pack("<I", len(plaintext) + TAG_LEN))
    ct = s.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, header, nonce, key)
    env_id = domain_hash(ENVELOPE_DOMAIN, header, ct)
    return header + ct + sign_digest(sender_sk, env_id)


def open_envelope(recipient_pk, recipient_xsk, context, env, max_plaintext=MAX_PLAINTEXT_LEN):
    """Returns (sender_pk, id, plaintext) or raises EnvelopeError(name of the failed check)."""
    if len(env) < 1:
        raise EnvelopeError("Truncated")
    if env[0] != ENVELOPE_VERSION:
        raise EnvelopeError("UnsupportedVersion")
    if len(env) < HEADER_LEN:
        raise EnvelopeError("Truncated")
    (ct_len,) = struct.unpack("<I", env[121:125])
    if ct_len < TAG_LEN:
        raise EnvelopeError("Malformed")
    if ct_len - TAG_LEN > max_plaintext:
        raise EnvelopeError("TooLarge")
    if len(env) < HEADER_LEN + ct_len + SIG_LEN:
        raise EnvelopeError("Truncated")
    if len(env) > HEADER_LEN + ct_len + SIG_LEN:
        raise EnvelopeError("TrailingBytes")
    header, ct, sig = env[:HEADER_LEN], env[HEADER_LEN:HEADER_LEN + ct_len], env[HEADER_LEN + ct_len:]
    sender_pk, recipient, eph_pub, nonce = header[1:33], header[33:65], header[65:97], header[97:121]
    if recipient != recipient_pk:
        raise EnvelopeError("WrongRecipient")
    env_id = domain_hash(ENVELOPE_DOMAIN, header, ct)
    if not verify_digest(sender_pk, env_id, sig):
        raise EnvelopeError("BadSignature")
    try:
        shared = s.crypto_scalarmult(recipient_xsk, eph_pub)
    except Exception as e:  # noqa: BLE001
        raise EnvelopeError("WeakKeyExchange") from e
    key = envelope_key(shared, eph_pub, s.crypto_sign_ed25519_pk_to_curve25519(recipient_pk), context)
    try:
        pt = s.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, header, nonce, key)
    except Exception as e:  # noqa: BLE001
        raise EnvelopeError("DecryptionFailed") from e
    return sender_pk, env_id, pt


def sign_record(sk, pk, domain, payload, created_at, expires_at):
    body = (bytes([SIGNED_VERSION]) + pk + struct.pack("<QQI", created_at, expires_at, len(payload)) + payload)
    rec_id = domain_hash(domain, body)
    return body + sign_digest(sk, rec_id), rec_id


def verify_record(domain, data):
    """Returns (author, created_at, expires_at, payload, id) or raises ValueError."""
    if len(data) < SIGNED_HEADER_LEN + SIG_LEN or data[0] != SIGNED_VERSION:
        raise ValueError("bad layout")
    author = data[1:33]
    created_at, expires_at, plen = struct.unpack("<QQI", data[33:53])
    if len(data) != SIGNED_HEADER_LEN + plen + SIG_LEN:
        raise ValueError("bad length")
    body, sig = data[:SIGNED_HEADER_LEN + plen], data[SIGNED_HEADER_LEN + plen:]
    rec_id = domain_hash(domain, body)
    if not verify_digest(author, rec_id, sig):
        raise ValueError("bad signature")
    return author, created_at, expires_at, body[SIGNED_HEADER_LEN:], rec_id
