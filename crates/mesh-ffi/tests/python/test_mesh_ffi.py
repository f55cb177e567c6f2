"""The generated Python bindings driving the real mesh-ffi library (the cdylib), through the
same C scaffolding the Kotlin and Swift bindings use.

Run by `cargo xtask bindings` (CI step "bindings: ..."), which builds the library, generates
`mesh_ffi.py` beside it and runs this file with the project's Python venv:

    python -m unittest discover -s crates/mesh-ffi/tests/python -v

with `PYTHONPATH` pointing at the generated module.
"""

import asyncio
import gc
import os
import socket
import tempfile
import unittest

import mesh_ffi
from mesh_ffi import (
    BleRadio,
    LinkKind,
    MeshError,
    MeshIdentity,
    NodeEvent,
    NodeSettings,
    PinVerifier,
    SecureStorage,
    invite_create,
    invite_verify,
    max_message_len,
    start_node,
)

# Every wait is bounded: a test that hangs fails instead.
WAIT = 60.0


class DictStorage(SecureStorage):
    """A foreign SecureStorage: what Android Keystore or the iOS Keychain would be."""

    def __init__(self):
        self.secrets = {}
        self.calls = []

    def put_secret(self, name, secret):
        self.calls.append(("put", name))
        self.secrets[name] = bytes(secret)

    def get_secret(self, name):
        self.calls.append(("get", name))
        return self.secrets.get(name)

    def delete_secret(self, name):
        self.calls.append(("delete", name))
        self.secrets.pop(name, None)


class BrokenStorage(SecureStorage):
    """A keystore that fails: a locked device, say."""

    def put_secret(self, name, secret):
        raise MeshError.Platform("keystore locked")

    def get_secret(self, name):
        raise MeshError.Platform("keystore locked")

    def delete_secret(self, name):
        raise RuntimeError("not a MeshError")


class PipeRadio(BleRadio):
    """A foreign BLE radio: one end of an in-process GATT pipe with a real ATT MTU. What it
    writes is delivered to the other end's link, in order, as the OS stack would."""

    def __init__(self, mtu, loop, propagate=True):
        self._mtu = mtu
        self.propagate = propagate
        self.loop = loop
        self.peer_link = None
        self.writes = 0
        self.largest = 0
        self.closed = False
        self.disconnects = 0

    def mtu(self):
        return self._mtu

    async def write(self, data):
        if self.closed or self.peer_link is None:
            raise MeshError.Platform("disconnected")
        assert len(data) <= self._mtu - 3, f"write of {len(data)} bytes over MTU {self._mtu}"
        self.writes += 1
        self.largest = max(self.largest, len(data))
        # Hand over on the event loop, as a GATT callback would arrive.
        await asyncio.sleep(0)
        if not self.peer_link.received(bytes(data)):
            raise MeshError.Platform("peer link closed")

    def disconnect(self):
        # A BLE disconnection is seen by both ends: the other side's stack reports it too.
        self.closed = True
        self.disconnects += 1
        if self.propagate and self.peer_link is not None:
            self.peer_link.disconnected()


async def next_event(node, predicate, timeout=WAIT):
    """The first event of `node` matching `predicate` (others are skipped)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise AssertionError("no matching event in time")
        event = await asyncio.wait_for(node.next_event(), left)
        if event is None:
            raise AssertionError("the node stopped")
        if predicate(event):
            return event


def settings(database, listen=None, bootstrap=(), accept_relayed=False):
    return NodeSettings(
        database=database,
        listen=listen,
        public_url=None,
        bootstrap=list(bootstrap),
        udp=["127.0.0.1:0"],
        accept_relayed=accept_relayed,
    )


class Base(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        # Rust calls the foreign async methods (BleRadio.write) from its own threads: tell the
        # bindings which event loop runs them.
        mesh_ffi.uniffi_set_event_loop(asyncio.get_running_loop())
        # Not asyncio's debug mode (which IsolatedAsyncioTestCase turns on): its thread check
        # trips over UniFFI 0.32's generated `_uniffi_future_dropped_callback`, which calls
        # `loop.call_soon` from the Rust thread that drops a finished foreign future (to cancel
        # a task that is already done). Harmless outside debug mode; reported in
        # docs/PLATFORMS.md.
        asyncio.get_running_loop().set_debug(False)
        self.dir = tempfile.TemporaryDirectory()
        self.nodes = []

    async def asyncTearDown(self):
        for n in self.nodes:
            await n.stop()
        self.dir.cleanup()

    def path(self, name):
        return os.path.join(self.dir.name, name)

    async def node(self, name, **kw):
        identity = await MeshIdentity.create(DictStorage())
        node = await start_node(identity, settings(self.path(name + ".db"), **kw))
        self.nodes.append(node)
        return identity, node


class IdentityTests(Base):
    async def test_foreign_secure_storage_holds_the_key(self):
        storage = DictStorage()
        a = await MeshIdentity.create(storage)
        # Looked for first (never replaced), then stored.
        self.assertEqual(storage.calls, [("get", "identity"), ("put", "identity")])
        self.assertEqual(len(storage.secrets["identity"]), 32)
        b = await MeshIdentity.load(storage)
        self.assertEqual(a.peer_id(), b.peer_id())
        self.assertEqual(a.fingerprint(), b.fingerprint())
        # Never replaced: that would lose the peer id for good.
        with self.assertRaises(MeshError.Refused):
            await MeshIdentity.create(storage)
        self.assertEqual(b.peer_id(), (await MeshIdentity.load(storage)).peer_id())
        # Saved elsewhere, the same key.
        other = DictStorage()
        await a.save(other)
        self.assertEqual(other.secrets["identity"], storage.secrets["identity"])

    async def test_missing_corrupt_and_failing_storage_are_typed(self):
        with self.assertRaises(MeshError.NoIdentity):
            await MeshIdentity.load(DictStorage())
        corrupt = DictStorage()
        corrupt.secrets["identity"] = b"short"
        with self.assertRaises(MeshError.Storage):
            await MeshIdentity.load(corrupt)
        with self.assertRaises(MeshError.Platform) as e:
            await MeshIdentity.load(BrokenStorage())
        self.assertIn("keystore locked", e.exception.reason)
        with self.assertRaises(MeshError.Platform):
            await MeshIdentity.create(BrokenStorage())

    async def test_sealed_identity_needs_its_passphrase(self):
        path = self.path("key.db")
        a = await MeshIdentity.create_sealed(path, "correct horse battery")
        b = await MeshIdentity.unlock_sealed(path, "correct horse battery")
        self.assertEqual(a.peer_id(), b.peer_id())
        with self.assertRaises(MeshError.WrongPassphrase):
            await MeshIdentity.unlock_sealed(path, "wrong horse battery")
        with self.assertRaises(MeshError.Refused):
            await MeshIdentity.create_sealed(path, "correct horse battery")
        with self.assertRaises(MeshError.InvalidInput):
            await MeshIdentity.unlock_sealed(path, "short")
        with self.assertRaises(MeshError.NoIdentity):
            await MeshIdentity.unlock_sealed(self.path("empty.db"), "correct horse battery")

    async def test_safety_numbers_match_on_both_sides(self):
        a = await MeshIdentity.create(DictStorage())
        b = await MeshIdentity.create(DictStorage())
        self.assertEqual(a.safety_number(b.peer_id()), b.safety_number(a.peer_id()))
        self.assertNotEqual(a.safety_number(b.peer_id()), a.safety_number(a.peer_id()))
        with self.assertRaises(MeshError.InvalidInput):
            a.safety_number("not a peer")


class InviteAndPinTests(Base):
    async def test_invites_verify_and_tampering_is_refused(self):
        me = await MeshIdentity.create(DictStorage())
        friend = await MeshIdentity.create(DictStorage())
        link = invite_create(me, "Ada", ["https://mesh.example.org/mesh/v1/signal"],
                             [friend.peer_id()], 3600)
        info = invite_verify(link)
        self.assertEqual(info.inviter, me.peer_id())
        self.assertEqual(info.fingerprint, me.fingerprint())
        self.assertEqual(info.display_name, "Ada")
        self.assertEqual(info.signaling, ["https://mesh.example.org/mesh/v1/signal"])
        self.assertEqual(info.peers, [friend.peer_id()])
        self.assertEqual(len(info.id), 64)
        # One character changed in the signed part: refused.
        i = len(link) // 2
        tampered = link[:i] + ("A" if link[i] != "A" else "B") + link[i + 1:]
        with self.assertRaises(MeshError.InvalidInput):
            invite_verify(tampered)
        with self.assertRaises(MeshError.InvalidInput):
            invite_create(me, "x" * 65, [], [], 0)
        with self.assertRaises(MeshError.InvalidInput):
            invite_create(me, "Ada", ["ftp://example.org"], [], 0)
        with self.assertRaises(MeshError.InvalidInput):
            invite_create(me, "Ada", [], ["not a peer"], 0)

    async def test_pin_verifier_refuses_bad_input(self):
        signer = await MeshIdentity.create(DictStorage())
        verifier = PinVerifier(signer.peer_id(), 0)
        self.assertIsNone(verifier.active_sequence())
        with self.assertRaises(MeshError.InvalidInput):
            verifier.update(b"not a signed pin set")
        with self.assertRaises(MeshError.InvalidInput):
            verifier.check_certificate("mesh.example.org", b"not DER")
        with self.assertRaises(MeshError.InvalidInput):
            PinVerifier("nope", 0)


class NodeTests(Base):
    async def test_two_nodes_exchange_encrypted_messages(self):
        a_id, a = await self.node("a", listen="127.0.0.1:0")
        self.assertTrue(a.address().startswith("http://127.0.0.1:"), a.address())
        b_id, b = await self.node("b", bootstrap=[f"{a.peer_id()}@{a.address()}"])
        self.assertEqual(b.peer_id(), b_id.peer_id())
        # Each side reports the link as it comes up.
        up = await next_event(a, lambda e: e.is_link_up())
        self.assertEqual((up.peer, up.kind), (b.peer_id(), LinkKind.WEB_RTC))
        up = await next_event(b, lambda e: e.is_link_up())
        self.assertEqual((up.peer, up.kind), (a.peer_id(), LinkKind.WEB_RTC))

        sent = await b.send(a.peer_id(), b"hello from b")
        got = await next_event(a, lambda e: e.is_message())
        self.assertEqual((got.id, got.sender, got.body), (sent, b.peer_id(), b"hello from b"))
        receipt = await next_event(b, lambda e: e.is_delivered())
        self.assertEqual((receipt.id, receipt.by), (sent, a.peer_id()))

        sent = await a.send(b.peer_id(), bytes(range(256)) * 100)
        got = await next_event(b, lambda e: e.is_message())
        self.assertEqual((got.id, got.sender, got.body), (sent, a.peer_id(), bytes(range(256)) * 100))
        links = a.links()
        self.assertEqual([(l.peer, l.kind) for l in links], [(b.peer_id(), LinkKind.WEB_RTC)])

        # Bad input is a typed error, not a crash.
        with self.assertRaises(MeshError.InvalidInput):
            await a.send("not a peer", b"x")
        with self.assertRaises(MeshError.InvalidInput):
            await a.send(a.peer_id(), b"to myself")
        with self.assertRaises(MeshError.InvalidInput):
            await a.send(b.peer_id(), b"x" * (max_message_len() + 1))
        largest = await a.send(b.peer_id(), b"y" * max_message_len())
        got = await next_event(b, lambda e: e.is_message())
        self.assertEqual((got.id, len(got.body)), (largest, max_message_len()))

        # A network change drops the WebRTC links and links to the bootstrap peer again;
        # messages go on.
        self.assertEqual(await b.network_changed(), 1)
        sent = await b.send(a.peer_id(), b"after the network change")
        got = await next_event(a, lambda e: e.is_message())
        self.assertEqual((got.id, got.body), (sent, b"after the network change"))

    async def test_blobs_are_served_and_fetched(self):
        _, a = await self.node("a", listen="127.0.0.1:0")
        _, b = await self.node("b", bootstrap=[f"{a.peer_id()}@{a.address()}"])
        data = os.urandom(300 * 1024)
        blob = await a.blob_put(data)
        self.assertEqual(len(blob), 64)
        self.assertEqual(await a.blob_get(blob, None), data)
        self.assertEqual(await b.blob_get(blob, a.peer_id()), data)
        # Kept: read again without the provider.
        self.assertEqual(await b.blob_get(blob, None), data)
        with self.assertRaises(MeshError.NotFound):
            await b.blob_get("00" * 32, None)
        with self.assertRaises(MeshError.Unreachable):
            await b.blob_get("00" * 32, a.peer_id())
        with self.assertRaises(MeshError.InvalidInput):
            await b.blob_get("xyz", None)

    async def test_bad_settings_and_a_stopped_node(self):
        identity = await MeshIdentity.create(DictStorage())
        for bad in (["no-at-sign"], ["notapeer@http://127.0.0.1:1/"], [f"{identity.peer_id()}@ftp://x"]):
            with self.assertRaises(MeshError.InvalidInput):
                await start_node(identity, settings(self.path("x.db"), bootstrap=bad))
        with self.assertRaises(MeshError.Unreachable):
            await start_node(identity, settings(self.path("x.db"), listen="256.0.0.1:0"))
        with self.assertRaises(MeshError.Storage):
            await start_node(identity, settings(self.path("missing-dir/sub/x.db")))

        node = await start_node(identity, settings(self.path("n.db")))
        # One node per database file.
        with self.assertRaises(MeshError.Storage) as e:
            await start_node(identity, settings(self.path("n.db")))
        self.assertIn("in use", e.exception.reason)
        await node.stop()
        await node.stop()  # twice: nothing
        with self.assertRaises(MeshError.Closed):
            await node.send(identity.peer_id(), b"x")
        self.assertIsNone(await asyncio.wait_for(node.next_event(), WAIT))
        # The database is free again: a new node opens it.
        again = await start_node(identity, settings(self.path("n.db")))
        self.nodes.append(again)
        self.assertEqual(again.peer_id(), identity.peer_id())

    async def test_a_stopped_node_frees_its_listening_port(self):
        identity = await MeshIdentity.create(DictStorage())
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        listen = f"127.0.0.1:{port}"
        node = await start_node(identity, settings(self.path("p.db"), listen=listen))
        self.assertIn(f":{port}/", node.address())
        with self.assertRaises(MeshError.Unreachable):
            await start_node(identity, settings(self.path("q.db"), listen=listen))
        await node.stop()
        again = None
        for _ in range(400):
            try:
                again = await start_node(identity, settings(self.path("p.db"), listen=listen))
                break
            except MeshError.Unreachable:
                await asyncio.sleep(0.05)
        self.assertIsNotNone(again, "the port stayed in use after stop")
        self.nodes.append(again)

    async def test_a_node_let_go_without_stop_stops_and_frees_its_database(self):
        identity = await MeshIdentity.create(DictStorage())
        node = await start_node(identity, settings(self.path("dropped.db")))
        del node
        gc.collect()
        for _ in range(400):
            try:
                again = await start_node(identity, settings(self.path("dropped.db")))
                break
            except MeshError.Storage:
                await asyncio.sleep(0.05)
        else:
            self.fail("the database stayed in use after the node was dropped")
        self.nodes.append(again)


class BleTests(Base):
    async def pair(self, mtu, expected=None, propagate=True):
        """Two nodes with no WebRTC between them (no listener, no bootstrap), linked by a
        Python radio pair."""
        _, c = await self.node("c")
        _, d = await self.node("d")
        loop = asyncio.get_running_loop()
        rc, rd = PipeRadio(mtu, loop, propagate), PipeRadio(mtu, loop, propagate)
        lc = c.attach_ble(rc, True, expected)
        ld = d.attach_ble(rd, False, None)
        rc.peer_link, rd.peer_link = ld, lc
        return c, d, rc, rd, lc, ld

    async def test_a_foreign_radio_carries_a_link(self):
        c, d, rc, rd, lc, ld = await self.pair(23)
        self.assertEqual(await asyncio.wait_for(lc.wait_connected(), WAIT), d.peer_id())
        self.assertEqual(await asyncio.wait_for(ld.wait_connected(), WAIT), c.peer_id())
        # Both nodes took the link into their pools.
        for _ in range(400):
            if c.links() and d.links():
                break
            await asyncio.sleep(0.05)
        self.assertEqual([(l.peer, l.kind) for l in c.links()], [(d.peer_id(), LinkKind.BLE)])
        self.assertEqual([(l.peer, l.kind) for l in d.links()], [(c.peer_id(), LinkKind.BLE)])
        for node, other in ((c, d), (d, c)):
            up = await next_event(node, lambda e: e.is_link_up())
            self.assertEqual((up.peer, up.kind), (other.peer_id(), LinkKind.BLE))

        body = os.urandom(3000)  # far over one 20-byte GATT write: fragmented
        sent = await c.send(d.peer_id(), body)
        got = await next_event(d, lambda e: e.is_message())
        self.assertEqual((got.id, got.sender, got.body, got.direct), (sent, c.peer_id(), body, True))
        receipt = await next_event(c, lambda e: e.is_delivered())
        self.assertEqual(receipt.id, sent)
        self.assertGreater(rc.writes, 3000 // 20)
        self.assertEqual(rc.largest, 20)
        self.assertEqual(lc.dropped(), 0)

        # The OS reports the connection gone: the link closes on both sides, stops taking
        # data, and the library tells both radios to disconnect.
        ld.disconnected()
        self.assertFalse(ld.received(b"late"))
        for _ in range(400):
            if not d.links() and not c.links() and rc.closed and rd.closed:
                break
            await asyncio.sleep(0.05)
        self.assertEqual((d.links(), c.links()), ([], []))
        for node, other in ((c, d), (d, c)):
            down = await next_event(node, lambda e: e.is_link_down())
            self.assertEqual(down.peer, other.peer_id())
        self.assertTrue(rd.closed and rc.closed, "a radio was never told to disconnect")
        self.assertEqual((rc.disconnects, rd.disconnects), (1, 1))

    async def test_stopping_the_node_disconnects_its_radios(self):
        # Disconnections not passed on by the "stack": d can only learn from the close
        # message c's link sends before it disconnects.
        c, d, rc, rd, lc, ld = await self.pair(517, propagate=False)
        await asyncio.wait_for(lc.wait_connected(), WAIT)
        await asyncio.wait_for(ld.wait_connected(), WAIT)
        await asyncio.wait_for(c.stop(), WAIT)
        self.assertTrue(rc.closed, "the stopped node's radio is still connected")
        # The close reached the other side, whose link closes and disconnects too.
        for _ in range(400):
            if rd.closed and not d.links():
                break
            await asyncio.sleep(0.05)
        self.assertTrue(rd.closed)
        self.assertEqual(d.links(), [])

    async def test_the_wrong_peer_is_refused(self):
        stranger = await MeshIdentity.create(DictStorage())
        c, d, rc, rd, lc, ld = await self.pair(185, expected=stranger.peer_id())
        with self.assertRaises(MeshError.Unreachable) as e:
            await asyncio.wait_for(lc.wait_connected(), WAIT)
        self.assertIn("expected peer", e.exception.reason)
        self.assertEqual(c.links(), [])
        with self.assertRaises(MeshError.InvalidInput):
            c.attach_ble(PipeRadio(23, None), True, "not a peer")


class RecoveryTests(Base):
    async def test_two_of_two_guardians_give_the_key_back(self):
        owner_id, owner = await self.node("owner", listen="127.0.0.1:0")
        boot = [f"{owner.peer_id()}@{owner.address()}"]
        _, g1 = await self.node("g1", listen="127.0.0.1:0", bootstrap=boot)
        _, g2 = await self.node("g2", listen="127.0.0.1:0", bootstrap=boot)
        guardians = [g1.peer_id(), g2.peer_id()]
        for g in (g1, g2):
            await g.recovery_guard(owner.peer_id(), True)
        with self.assertRaises(MeshError.InvalidInput):
            await owner.recovery_protect(guardians, 3)
        with self.assertRaises(MeshError.InvalidInput):
            await owner.recovery_protect(guardians, 0)
        set_id = await owner.recovery_protect(guardians, 2)
        protected = await next_event(owner, lambda e: e.is_recovery_protected())
        self.assertEqual(protected.set_id, set_id)
        for g in (g1, g2):
            stored = await next_event(g, lambda e: e.is_recovery_share_stored())
            self.assertEqual(stored.owner, owner_id.peer_id())

        # The owner's phone is lost: a new device, with a new identity, asks the guardians.
        _, device = await self.node("device", listen="127.0.0.1:0", bootstrap=boot)
        await owner.stop()
        for g in (g1, g2):
            await device.connect(g.peer_id(), g.address())
        codes = {c.guardian: c.code for c in await device.recovery_start(owner_id.peer_id(), guardians)}
        self.assertEqual(set(codes), set(guardians))
        for g in (g1, g2):
            asked = await next_event(g, lambda e: e.is_recovery_approval_needed())
            self.assertEqual((asked.owner, asked.requester), (owner_id.peer_id(), device.peer_id()))
            # The guardian's user compares the code the device shows.
            self.assertEqual(asked.code, codes[g.peer_id()])
            pending = await g.recovery_requests()
            self.assertEqual([(p.request_id, p.code) for p in pending], [(asked.request_id, asked.code)])
            await g.recovery_approve(asked.request_id)
        recovered = await next_event(device, lambda e: e.is_recovered())
        self.assertEqual(recovered.owner, owner_id.peer_id())
        # Saved into the new device's keystore before it is handed over; a failing keystore
        # keeps it here for another try.
        with self.assertRaises(MeshError.Platform):
            await device.recovery_take(owner_id.peer_id(), BrokenStorage())
        keystore = DictStorage()
        key = await device.recovery_take(owner_id.peer_id(), keystore)
        self.assertEqual(key.peer_id(), owner_id.peer_id())
        self.assertEqual((await MeshIdentity.load(keystore)).peer_id(), owner_id.peer_id())
        # Once.
        with self.assertRaises(MeshError.Refused):
            await device.recovery_take(owner_id.peer_id(), DictStorage())
        with self.assertRaises(MeshError.Refused):
            await g1.recovery_approve("00" * 32)


if __name__ == "__main__":
    import sys

    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    passed = result.testsRun - failed - len(result.skipped)
    # The summary line cargo xtask counts (the same shape as cargo test's).
    print(f"test result: {'ok' if failed == 0 else 'FAILED'}. {passed} passed; {failed} failed")
    sys.exit(0 if failed == 0 and not result.skipped else 1)
