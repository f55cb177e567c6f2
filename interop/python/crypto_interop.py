"""Interop between mesh-crypto (Rust, dryoc) and libsodium (PyNaCl), both directions.

  check VECTORS.json   libsodium recomputes every committed vector byte for byte
  check-platform V.json  the same for invites, keystore secrets and pin sets
  check-protocol V.json  rebuilds the DHT, gossip and blob vectors (records, messages, Bloom
                       digests, partitions, frames, blob manifests and ids, transfer messages)
                       from their inputs, and opens the private blobs with libsodium
  produce              libsodium makes fresh envelopes and records for the Rust side to open
                       (JSON on stdout; read by tests/tests/libsodium_interop.rs)
"""

import base64
import json
import os
import struct
import sys

import meshsodium as m
import nacl.bindings as s


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


def signed(sk, pk, domain, created, expires, payload):
    head = bytes([1]) + pk + struct.pack("<QQI", created, expires, len(payload)) + payload
    return head + m.sign_digest(sk, m.domain_hash(domain, head))


def bloom_size(n, rate):
    import math
    n = max(n, 1)
    bits = math.ceil(-n * math.log(rate) / (math.log(2) ** 2))
    bits = min(max(bits, 64), 1 << 20)
    bits = (bits + 7) // 8 * 8
    k = min(max(round(bits / n * math.log(2)), 1), 16)
    return bits, k


def bloom(ids, seed, bits, k):
    out = bytearray(bits // 8)
    for i in ids:
        h = m.domain_hash("mesh/gossip-bloom/v1", struct.pack("<Q", seed), i)
        h1 = struct.unpack("<Q", h[0:8])[0]
        h2 = struct.unpack("<Q", h[8:16])[0] | 1
        for j in range(k):
            b = (h1 + j * h2) % (1 << 64) % bits
            out[b // 8] |= 1 << (b % 8)
    return bytes(out)


def check_protocol(path):
    v = json.load(open(path))
    assert v["version"] == 1
    n = 0
    for r in v["dht_records"]:
        pk, sk, _, _ = m.keypair(unhex(r["author_seed"]))
        name, value = unhex(r["name"]), unhex(r["value"])
        payload = bytes([1, len(name)]) + name + struct.pack("<Q", r["seq"]) + value
        rec = signed(sk, pk, "mesh/dht-record/v1", r["created_at"], r["expires_at"], payload)
        assert rec.hex() == r["record"], "DHT record rebuilt byte for byte"
        assert m.domain_hash("mesh/dht-key/v1", pk, name).hex() == r["key"], "DHT record key"
        n += 1
    contact = m.keypair(bytes([0x52] * 32))[0]
    addr = b"127.0.0.1:4000"
    expected = [
        bytes([1, 1]) + struct.pack("<Q", 1),
        bytes([1, 3]) + struct.pack("<Q", 2) + bytes([0xAB] * 32),
        bytes([1, 5]) + struct.pack("<Q", 3) + bytes([1]) + contact + bytes([len(addr)]) + addr,
        bytes([1, 8]) + struct.pack("<Q", 4) + bytes([3]),
    ]
    assert [x["bytes"] for x in v["dht_messages"]] == [e.hex() for e in expected], "DHT messages"
    n += len(expected)
    for g in v["gossip_messages"]:
        pk, sk, _, _ = m.keypair(unhex(g["author_seed"]))
        topic, body = unhex(g["topic"]), unhex(g["body"])
        msg = signed(sk, pk, "mesh/gossip/v1", g["created_at"], g["expires_at"],
                     bytes([1, len(topic)]) + topic + body)
        assert msg.hex() == g["message"], "gossip message rebuilt byte for byte"
        assert m.domain_hash("mesh/gossip/v1", msg[:-64]).hex() == g["id"], "gossip message id"
        n += 1
    for b in v["blooms"]:
        bits, k = bloom_size(b["items"], b["rate"])
        assert (bits, k) == (b["m"], b["k"]), "Bloom sizing"
        assert bloom([unhex(i) for i in b["ids"]], b["seed"], bits, k).hex() == b["filter"], "Bloom bits"
        n += 1
    for p in v["partitions"]:
        top = int.from_bytes(unhex(p["id"])[0:2], "big")
        want = 0 if p["bits"] == 0 else top >> (16 - p["bits"])
        assert want == p["partition"], "partition"
        n += 1
    ids = [m.h256(bytes([i])) for i in range(20)]
    bits, k = bloom_size(2, 0.01)
    digest = (bytes([1, 2]) + struct.pack("<QBHBI", 9, 2, 1, k, bits) + bloom([ids[0]], 9, bits, k))
    frames = {
        "push": bytes([1, 1, 6, 0, 1, 2, 3]),
        "digest": digest,
        "messages": bytes([1, 3]) + struct.pack("<H", 2) + struct.pack("<I", 3) + bytes([7] * 3) + struct.pack("<I", 0),
    }
    for f in v["gossip_frames"]:
        assert frames[f["kind"]].hex() == f["bytes"], f"gossip {f['kind']} frame"
        n += 1
    n += check_blobs(v)
    n += check_recovery(v["recovery"])
    n += check_messages(v["messages"])
    print(f"libsodium and Python rebuilt {n} DHT, gossip, blob, recovery and message vectors")


def check_messages(v):
    """Rebuilds a message, its direct frame and its receipt (docs/PROTOCOL.md section 15)."""
    spk, ssk, _, sxsk = m.keypair(unhex(v["sender_seed"]))
    rpk, rsk, _, rxsk = m.keypair(unhex(v["recipient_seed"]))
    ctx = b"mesh/message/v1"
    plain = bytes([1, 1]) + unhex(v["body"])
    msg = m.seal(ssk, spk, rpk, ctx, plain, unhex(v["message_ephemeral"]), unhex(v["message_nonce"]))
    assert msg.hex() == v["message"], "message envelope rebuilt byte for byte"
    sender, msg_id, opened = m.open_envelope(rpk, rxsk, ctx, msg)
    assert sender == spk and opened == plain and msg_id.hex() == v["message_id"], "message opens"
    assert (bytes([1]) + msg).hex() == v["direct_frame"], "direct frame"
    receipt = m.seal(rsk, rpk, spk, ctx, bytes([1, 2]) + msg_id, unhex(v["receipt_ephemeral"]), unhex(v["receipt_nonce"]))
    assert receipt.hex() == v["receipt"], "receipt rebuilt byte for byte"
    return 3


def check_recovery(r):
    """Rebuilds the recovery vectors (docs/PROTOCOL.md section 14) with libsodium."""
    never = 2**64 - 1
    opk, osk, _, _ = m.keypair(unhex(r["owner_seed"]))
    gpk, gsk, _, gxsk = m.keypair(unhex(r["guardian_seeds"][0]))
    hpk = m.keypair(unhex(r["guardian_seeds"][1]))[0]
    dpk, dsk, _, _ = m.keypair(unhex(r["device_seed"]))
    set_id, t0 = unhex(r["set_id"]), r["created_at"]
    entries = b""
    for g, sh in zip((gpk, hpk), r["shares"]):
        y, salt = unhex(sh["y"]), unhex(sh["salt"])
        c = m.domain_hash("mesh/recovery-share/v1", set_id, bytes([sh["x"]]), y, salt)
        entries += g + bytes([sh["x"]]) + c
    payload = bytes([1]) + set_id + bytes([r["k"], 2]) + entries
    guardian_set = signed(osk, opk, "mesh/recovery-set/v1", t0, never, payload)
    assert guardian_set.hex() == r["guardian_set"], "guardian set rebuilt byte for byte"
    sh = r["shares"][0]
    plain = bytes([1]) + bytes(32) + bytes([sh["x"]]) + unhex(sh["y"]) + unhex(sh["salt"]) + guardian_set
    grant = m.seal(osk, opk, gpk, b"mesh/recovery/grant/v1", plain, unhex(r["grant_ephemeral"]), unhex(r["grant_nonce"]))
    assert grant.hex() == r["grant"], "grant envelope rebuilt byte for byte"
    sender, _, opened = m.open_envelope(gpk, gxsk, b"mesh/recovery/grant/v1", grant)
    assert sender == opk and opened == plain, "the guardian opens its grant"
    ack = signed(gsk, gpk, "mesh/recovery-ack/v1", t0, never, bytes([1, 1]) + opk + set_id)
    assert ack.hex() == r["ack"], "acknowledgement"
    req_payload = bytes([1]) + opk + bytes(32) + unhex(r["request_nonce"])
    request = signed(dsk, dpk, "mesh/recovery-request/v1", t0, r["request_expires_at"], req_payload)
    assert request.hex() == r["request"], "request"
    request_id = m.domain_hash("mesh/recovery-request/v1", request[:-64])
    assert request_id.hex() == r["request_id"], "request id"
    code = int.from_bytes(m.domain_hash("mesh/recovery-code/v1", request_id)[:4], "little") % 1_000_000
    assert f"{code:06d}" == r["verification_code"], "verification code"
    status = signed(gsk, gpk, "mesh/recovery-status/v1", t0, never, bytes([1]) + request_id + bytes([1]))
    assert status.hex() == r["status"], "status"
    revocation = signed(osk, opk, "mesh/recovery-revoke/v1", t0, never, bytes([1]) + set_id)
    assert revocation.hex() == r["revocation"], "revocation"
    assert (bytes([1, 3]) + request).hex() == r["request_frame"], "recovery frame"
    return 9


def blob_manifest(content, chunk_size):
    """(manifest, blob id) of content cut at chunk_size (docs/PROTOCOL.md section 13)."""
    chunks = [content[i:i + chunk_size] for i in range(0, len(content), chunk_size)]
    hashes = b"".join(m.h256(c) for c in chunks)
    manifest = bytes([1]) + struct.pack("<QII", len(content), chunk_size, len(chunks)) + hashes
    blob_id = m.domain_hash("mesh/blob/v1", struct.pack("<QI", len(content), chunk_size), hashes)
    return manifest, blob_id


def check_blobs(v):
    n = 0
    for b in v["blobs"]:
        manifest, blob_id = blob_manifest(unhex(b["content"]), b["chunk_size"])
        assert manifest.hex() == b["manifest"], "blob manifest"
        assert blob_id.hex() == b["id"], "blob id"
        n += 1
    blob = bytes([0xB1] * 32)
    hello_manifest, hello_id = blob_manifest(b"hello", 1024)
    head = lambda kind, rid: bytes([1, kind]) + struct.pack("<Q", rid)  # noqa: E731
    expected = [
        head(1, 1) + blob,
        head(2, 2) + hello_id + hello_manifest,
        head(3, 3) + blob + struct.pack("<I", 7),
        head(4, 4) + blob + struct.pack("<I", 7) + bytes([1, 2, 3]),
        head(5, 5) + blob,
        head(6, 2**64 - 1),
    ]
    assert [x["bytes"] for x in v["blob_messages"]] == [e.hex() for e in expected], "blob messages"
    n += len(expected)
    segment = 65536 + s.crypto_secretstream_xchacha20poly1305_ABYTES
    for p in v["private_blobs"]:
        rpk, _, _, rxsk = m.keypair(unhex(p["recipient_seed"]))
        spk = m.keypair(unhex(p["sender_seed"]))[0]
        sender, _, key_plain = m.open_envelope(rpk, rxsk, b"mesh/blob/key/v1", unhex(p["key_envelope"]))
        assert sender == spk, "key envelope sender"
        content = unhex(p["content"])
        _, blob_id = blob_manifest(content, 65408)
        assert key_plain[0] == 1 and key_plain[1:33] == blob_id, "key bound to the blob id"
        assert blob_id.hex() == p["blob_id"]
        assert content[0] == 1, "private blob version"
        state = s.crypto_secretstream_xchacha20poly1305_state()
        s.crypto_secretstream_xchacha20poly1305_init_pull(state, content[1:25], key_plain[33:])
        rest, out = content[25:], b""
        while rest:
            seg, rest = rest[:segment], rest[segment:]
            msg, tag = s.crypto_secretstream_xchacha20poly1305_pull(state, seg, None)
            want = s.crypto_secretstream_xchacha20poly1305_TAG_FINAL if not rest else \
                s.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
            assert tag == want, "segment tag"
            out += msg
        assert out == bytes(i % 251 for i in range(p["plaintext_len"])), "private blob plaintext"
        n += 1
    return n


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
    elif len(sys.argv) == 3 and sys.argv[1] == "check-protocol":
        check_protocol(sys.argv[2])
    elif len(sys.argv) == 2 and sys.argv[1] == "produce":
        produce()
    else:
        sys.exit(__doc__)
