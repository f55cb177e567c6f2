"""Interop between mesh-crypto (Rust, dryoc) and libsodium (PyNaCl), both directions.

  check VECTORS.json   libsodium recomputes every committed vector byte for byte
  check-platform V.json  the same for invites, keystore secrets and pin sets
  produce              libsodium makes fresh envelopes and records for the Rust side to open
                       (JSON on stdout; read by tests/tests/libsodium_interop.rs)
"""

import base64
import json
import os
import struct
import sys

import meshsodium as m


def unhex(x):
    return bytes.fromhex(x)


def check(path):
    v = json.load(open(path))
    assert v["version"] == 1
    keys = []
    n = 0
    for iv in v["identities"]:
        pk, sk, xpk, xsk = m.keypair(unhex(iv["seed"]))
        assert pk.hex() == iv["ed25519_public"], "ed25519 public key"
        assert xpk.hex() == iv["x25519_public"], "x25519 conversion"
        assert m.peer_id_text(pk) == iv["peer_id"], "peer id text"
        assert m.h256(pk).hex() == iv["dht_key"], "dht key"
        assert m.fingerprint(pk) == iv["fingerprint"], "fingerprint"
        keys.append((pk, sk, xpk, xsk))
        n += 1
    for h in v["hashes"]:
        assert m.h256(unhex(h["input"])).hex() == h["blake2b_256"]
        n += 1
    for d in v["domain_hashes"]:
        assert m.domain_hash(d["domain"], unhex(d["message"])).hex() == d["digest"]
        n += 1
    for sv in v["signatures"]:
        pk, sk, _, _ = keys[sv["signer"]]
        digest = m.domain_hash(sv["domain"], unhex(sv["message"]))
        assert m.sign_digest(sk, digest).hex() == sv["signature"], "signature bytes"
        assert m.verify_digest(pk, digest, unhex(sv["signature"]))
        n += 1
    for sn in v["safety_numbers"]:
        assert m.safety_number(keys[sn["a"]][0], keys[sn["b"]][0]) == sn["digits"], "safety number"
        n += 1
    for e in v["envelopes"]:
        spk, ssk, _, _ = keys[e["sender"]]
        rpk, _, _, rxsk = keys[e["recipient"]]
        ctx, pt = unhex(e["context"]), unhex(e["plaintext"])
        rebuilt = m.seal(ssk, spk, rpk, ctx, pt, unhex(e["ephemeral_secret"]), unhex(e["nonce"]))
        assert rebuilt.hex() == e["envelope"], "envelope rebuilt byte for byte"
        sender, env_id, opened = m.open_envelope(rpk, rxsk, ctx, unhex(e["envelope"]))
        assert (sender, env_id.hex(), opened) == (spk, e["id"], pt)
        n += 1
    for r in v["signed_records"]:
        pk, sk, _, _ = keys[r["author"]]
        data, rec_id = m.sign_record(sk, pk, r["domain"], unhex(r["payload"]), r["created_at"], r["expires_at"])
        assert data.hex() == r["bytes"] and rec_id.hex() == r["id"], "signed record rebuilt"
        author, created, expires, payload, rid = m.verify_record(r["domain"], unhex(r["bytes"]))
        assert (author, created, expires, payload.hex()) == (pk, r["created_at"], r["expires_at"], r["payload"])
        n += 1
    for bad in v["invalid_envelopes"]:
        rpk, _, _, rxsk = keys[bad["recipient"]]
        try:
            m.open_envelope(rpk, rxsk, unhex(bad["context"]), unhex(bad["envelope"]))
        except m.EnvelopeError as e:
            assert str(e) == bad["error"], "%s: libsodium says %s, vector says %s" % (bad["description"], e, bad["error"])
        else:
            raise AssertionError("libsodium accepted an invalid envelope: " + bad["description"])
        n += 1
    print("libsodium (PyNaCl %s) checked %d mesh-crypto vectors: all match" % (__import__("nacl").__version__, n))


def parse_invite_payload(p):
    assert p[0] == 1, "invite payload version"
    n = p[1]
    name = p[2:2 + n].decode("utf-8")
    i = 2 + n
    nonce = p[i:i + 16]
    i += 16
    count = p[i]
    i += 1
    hints = []
    for _ in range(count):
        kind, ln = p[i], p[i + 1]
        data = p[i + 2:i + 2 + ln]
        i += 2 + ln
        hints.append((kind, data))
    assert i == len(p), "trailing bytes in invite payload"
    return name, nonce, hints


def ndef_record(mime, payload):
    short = len(payload) < 256
    header = 0x80 | 0x40 | (0x10 if short else 0) | 0x02
    length = bytes([len(payload)]) if short else struct.pack(">I", len(payload))
    return bytes([header, len(mime)]) + length + mime + payload


def check_platform(path):
    v = json.load(open(path))
    assert v["version"] == 1
    n = 0
    for inv in v["invites"]:
        pk, _, _, _ = m.keypair(unhex(inv["inviter_seed"]))
        data = unhex(inv["bytes"])
        author, created, expires, payload, _ = m.verify_record("mesh/invite/v1", data)
        assert author == pk and created == inv["created_at"] and expires == inv["expires_at"]
        name, _, hints = parse_invite_payload(payload)
        assert name == inv["display_name"], "display name"
        for kind, hint in hints:
            assert kind in (1, 2) and (kind != 2 or len(hint) == 32)
        link = "mesh://invite/" + base64.urlsafe_b64encode(data).decode().rstrip("=")
        assert link == inv["link"], "link form"
        assert ndef_record(b"application/vnd.mesh.invite", data).hex() == inv["ndef"], "NDEF form"
        n += 1
    for ks in v["keystore"]:
        sealed = unhex(ks["sealed"])
        body, checksum = sealed[:-32], sealed[-32:]
        assert m.h256(body) == checksum, "keystore checksum"
        assert body[0] == 1 and body[1] == 2, "version and algorithm"
        ops, mem = struct.unpack("<II", body[2:10])
        assert (ops, mem) == (ks["opslimit"], ks["memlimit"])
        salt, nonce = body[10:26], body[26:50]
        (ct_len,) = struct.unpack("<I", body[50:54])
        ct = body[54:]
        assert len(ct) == ct_len
        key = m.s.crypto_pwhash_alg(32, ks["passphrase"].encode(), salt, ops, mem, m.s.crypto_pwhash_ALG_ARGON2ID13)
        secret = m.s.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, body[:54], nonce, key)
        assert secret.hex() == ks["secret"], "keystore secret"
        rebuilt_body = body[:54] + m.s.crypto_aead_xchacha20poly1305_ietf_encrypt(secret, body[:54], nonce, key)
        assert rebuilt_body + m.h256(rebuilt_body) == sealed, "keystore rebuilt byte for byte"
        n += 1
    for ps in v["pin_sets"]:
        pk, _, _, _ = m.keypair(unhex(ps["signer_seed"]))
        author, created, expires, payload, _ = m.verify_record("mesh/pin-set/v1", unhex(ps["bytes"]))
        assert author == pk and (created, expires) == (ps["created_at"], ps["expires_at"])
        assert payload[0] == 1
        (seq,) = struct.unpack("<Q", payload[1:9])
        assert seq == ps["sequence"]
        i, hosts = 10, []
        for _ in range(payload[9]):
            ln = payload[i]
            hosts.append(payload[i + 1:i + 1 + ln].decode())
            i += 1 + ln
        pins = [payload[i + 1 + 32 * k:i + 33 + 32 * k].hex() for k in range(payload[i])]
        assert hosts == ps["hosts"] and pins == ps["pins"], "pin set contents"
        n += 1
    print("libsodium (PyNaCl %s) checked %d mesh-platform vectors: all match" % (__import__("nacl").__version__, n))


def produce():
    out = {"envelopes": [], "signed_records": [], "invalid_envelopes": []}
    sender_seed, recipient_seed = os.urandom(32), os.urandom(32)
    spk, ssk, _, _ = m.keypair(sender_seed)
    rpk, _, _, _ = m.keypair(recipient_seed)
    out["sender_public"] = spk.hex()
    out["recipient_seed"] = recipient_seed.hex()
    for size in (0, 1, 1000, 65536, 1 << 20):
        ctx = b"mesh/message"
        pt = os.urandom(size)
        env = m.seal(ssk, spk, rpk, ctx, pt, os.urandom(32), os.urandom(24))
        out["envelopes"].append({"context": ctx.hex(), "plaintext_blake2b": m.h256(pt).hex(),
                                 "plaintext_len": size, "envelope": env.hex()})
    good = m.seal(ssk, spk, rpk, b"ctx", b"libsodium says hi", os.urandom(32), os.urandom(24))
    flipped = bytearray(good)
    flipped[m.HEADER_LEN] ^= 1
    out["invalid_envelopes"].append({"context": b"ctx".hex(), "envelope": bytes(flipped).hex(), "error": "BadSignature"})
    out["invalid_envelopes"].append({"context": b"other".hex(), "envelope": good.hex(), "error": "DecryptionFailed"})
    t0 = 1_700_000_000_000
    for payload, expires in ((b"from libsodium", t0 + 60_000), (b"", 2**64 - 1)):
        data, rec_id = m.sign_record(ssk, spk, "mesh/test-vector/v1", payload, t0, expires)
        out["signed_records"].append({"bytes": data.hex(), "id": rec_id.hex(), "payload": payload.hex(),
                                      "created_at": t0, "expires_at": expires})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "check":
        check(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "check-platform":
        check_platform(sys.argv[2])
    elif len(sys.argv) == 2 and sys.argv[1] == "produce":
        produce()
    else:
        sys.exit(__doc__)
