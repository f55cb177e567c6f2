"""Interop of the mesh WebRTC link with an independent WebRTC stack: aiortc, on loopback.

Usage: webrtc_interop.py TEST_PEER_EXECUTABLE

Starts the native test peer (backends/webrtc/examples/test-peer.rs), dials it from aiortc
through its HTTP signaling endpoint and speaks the whole link as docs/PROTOCOL.md §8 writes it:
session descriptions, the two negotiated data channels, handshake v1 bound to the DTLS
fingerprints, frames cut into data-channel messages, link control. The test peer echoes every
frame (on the unreliable channel when its payload starts with 0xff, else on the reliable
one); each echo is compared byte for byte. Prints one line per
check and exits non-zero at the first failure. No STUN/TURN; every step has a deadline and the
whole run stays under a minute.

Written from the protocol document (§1, §2, §8) with libsodium through meshsodium.py; it shares
no code with the Rust implementation.
"""

import asyncio
import base64
import os
import struct
import sys
import threading
import time
from collections import deque
from urllib.parse import urlsplit

import aioice.ice
import nacl.bindings as s
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

import meshsodium as m

# Frame v1 (§8): version u8 = 1 | protocol u8 | payload.
FRAME_VERSION = 1
FRAME_HEADER_LEN = 2
MAX_FRAME_PAYLOAD = 1024 * 1024 + 4096
CONTROL = 0
PING, PONG, CLOSE = 1, 2, 3

# Data-channel messages (§8 "WebRTC"): flags u8 | data, at most 16 KiB in all.
MAX_MESSAGE_LEN = 16 * 1024
CHUNK_DATA_LEN = MAX_MESSAGE_LEN - 1
CHUNK_LAST, CHUNK_MORE = 0x01, 0x00
MAX_UNRELIABLE_PAYLOAD = CHUNK_DATA_LEN - FRAME_HEADER_LEN

# Session description (§8).
DESCRIPTION_VERSION = 1
OFFER, ANSWER = 1, 2
DESCRIPTION_HEADER_LEN = 2 + 16 + 32 + 32 + 2
MAX_SDP_LEN = 16 * 1024
MAX_HTTP_RESPONSE = 64 * 1024

# Handshake v1 (§8).
HANDSHAKE_VERSION = 1
M2_LEN = 2 + 32 + 32 + 32 + 64
M1_RESEND = 0.2
BINDING_LABEL = b"mesh/webrtc-dtls/v1"

# The test peer sends a frame whose payload starts with this byte back on the unreliable channel.
UNRELIABLE_MARK = 0xFF
# Protocol id of the frames echoed: any but 0 (link control) goes through the test peer.
ECHO_PROTOCOL = 5

RUN_DEADLINE = 45  # seconds for all the checks; teardown takes at most 8 more
HARD_LIMIT = 57  # seconds until the process exits whatever it is waiting for


class Failure(Exception):
    """A failed check: the message says what was expected and what came instead."""


def require(condition, message):
    if not condition:
        raise Failure(message)


async def within(seconds, what, awaitable):
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise Failure(f"{what}: nothing within {seconds:g} s") from None


def first_difference(a, b):
    """Where two byte strings first differ, for a readable mismatch report."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def valid_peer_id(pk):
    # §2: valid exactly when libsodium converts it to an X25519 key.
    try:
        s.crypto_sign_ed25519_pk_to_curve25519(pk)
        return True
    except Exception:  # noqa: BLE001 - any refusal means invalid
        return False


def peer_id_from_text(text):
    """A PeerId from its text form (§2): 52 base32 characters, no padding, either case."""
    require(len(text) == 52, f"peer id {text!r} is not 52 characters")
    try:
        pk = base64.b32decode(text.upper() + "====")
    except ValueError:
        raise Failure(f"peer id {text!r} is not base32") from None
    require(m.peer_id_text(pk) == text.lower(), f"peer id {text!r} is not canonical")
    require(valid_peer_id(pk), f"peer id {text!r} is not a valid Ed25519 key")
    return pk


def encode_frame(protocol, payload):
    return bytes([FRAME_VERSION, protocol]) + payload


def check_frame(encoded):
    require(len(encoded) >= FRAME_HEADER_LEN, f"frame of {len(encoded)} bytes, shorter than its header")
    require(encoded[0] == FRAME_VERSION, f"frame version {encoded[0]}")


def encode_description(kind, session, sender, recipient, sdp):
    sdp = sdp.encode()
    require(len(sdp) <= MAX_SDP_LEN, f"our SDP is {len(sdp)} bytes, over {MAX_SDP_LEN}")
    return (bytes([DESCRIPTION_VERSION, kind]) + session + sender + recipient
            + struct.pack("<H", len(sdp)) + sdp)


def decode_description(data):
    """(kind, session, from, to, sdp) of an encoded description; any other layout is refused."""
    require(len(data) >= DESCRIPTION_HEADER_LEN, f"description of {len(data)} bytes is truncated")
    require(data[0] == DESCRIPTION_VERSION, f"description version {data[0]}")
    (sdp_len,) = struct.unpack_from("<H", data, DESCRIPTION_HEADER_LEN - 2)
    require(sdp_len <= MAX_SDP_LEN, f"SDP length {sdp_len} over {MAX_SDP_LEN}")
    require(len(data) == DESCRIPTION_HEADER_LEN + sdp_len,
            f"description is {len(data)} bytes, its SDP length says {DESCRIPTION_HEADER_LEN + sdp_len}")
    try:
        sdp = data[DESCRIPTION_HEADER_LEN:].decode("utf-8")
    except UnicodeDecodeError:
        raise Failure("SDP is not UTF-8") from None
    return data[1], data[2:18], data[18:50], data[50:82], sdp


def sdp_sha256_fingerprint(sdp):
    """The certificate fingerprint an SDP announces (`a=fingerprint:sha-256 AB:CD:...`)."""
    for line in sdp.splitlines():
        algorithm, _, value = line.strip().removeprefix("a=fingerprint:").partition(" ")
        if line.startswith("a=fingerprint:") and algorithm.lower() == "sha-256":
            return parse_fingerprint(value)
    raise Failure("the answer's SDP has no SHA-256 fingerprint")


def parse_fingerprint(value):
    parts = value.strip().split(":")
    require(len(parts) == 32 and all(len(p) == 2 for p in parts), f"fingerprint {value!r}")
    return bytes.fromhex("".join(parts))


async def post_signal(url, body):
    """POSTs a description to an HTTP signaling endpoint (§8); returns (status, response body).

    Plain HTTP/1.1 on asyncio streams rather than a blocking client, so that a deadline can
    cancel it at any point."""
    target = urlsplit(url)
    reader, writer = await asyncio.open_connection(target.hostname, target.port or 80)
    try:
        writer.write((f"POST {target.path or '/'} HTTP/1.1\r\nHost: {target.netloc}\r\n"
                      "Content-Type: application/octet-stream\r\n"
                      f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)
        await writer.drain()
        response = b""
        while chunk := await reader.read(MAX_HTTP_RESPONSE):
            response += chunk
            require(len(response) <= MAX_HTTP_RESPONSE, "signaling response over 64 KiB")
    finally:
        writer.close()
    head, _, payload = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = status_line.split(" ", 2)
    require(len(fields) >= 2 and fields[0].startswith("HTTP/1.") and fields[1].isdigit(),
            f"not an HTTP response: {status_line!r}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    require("chunked" not in headers.get("transfer-encoding", ""), "chunked HTTP response")
    if "content-length" in headers:
        require(len(payload) == int(headers["content-length"]),
                f"HTTP body of {len(payload)} bytes, Content-Length {headers['content-length']}")
    return int(fields[1]), payload


class Link:
    """Our side of a WebRTC link: the two channels of §8 "WebRTC" and the messages on them."""

    def __init__(self, pc):
        # Both channels are negotiated out of band (no DCEP) with the same ids and settings on
        # both ends: stream 0 reliable and ordered, stream 1 unordered without retransmissions.
        self.reliable = pc.createDataChannel("mesh", negotiated=True, id=0, ordered=True)
        self.unreliable = pc.createDataChannel(
            "mesh-unreliable", negotiated=True, id=1, ordered=False, maxRetransmits=0)
        self._reliable_in = asyncio.Queue()
        self._unreliable_in = asyncio.Queue()
        self._partial = bytearray()  # chunks of the reliable frame being reassembled
        self.closed = asyncio.Event()
        self.reliable.on("message", self._reliable_in.put_nowait)
        self.unreliable.on("message", self._unreliable_in.put_nowait)
        self.reliable.on("close", self._on_close)

        @pc.on("connectionstatechange")
        def _state_changed():
            if pc.connectionState in ("failed", "closed"):
                self._on_close()

    def _on_close(self):
        self.closed.set()
        self._reliable_in.put_nowait(None)

    async def wait_open(self):
        while "connecting" in (self.reliable.readyState, self.unreliable.readyState):
            require(not self.closed.is_set(), "the peer connection failed before the channels opened")
            await asyncio.sleep(0.02)
        require(self.reliable.readyState == self.unreliable.readyState == "open",
                f"channels {self.reliable.readyState}/{self.unreliable.readyState}, not open")

    def send(self, encoded):
        """Sends a frame or handshake message on the reliable channel, cut into messages of at
        most 16 KiB: flags 0x00 on every chunk but the last (0x01); returns how many."""
        count = max(1, -(-len(encoded) // CHUNK_DATA_LEN))
        for i in range(count):
            flags = CHUNK_LAST if i == count - 1 else CHUNK_MORE
            self.reliable.send(bytes([flags]) + encoded[i * CHUNK_DATA_LEN:(i + 1) * CHUNK_DATA_LEN])
        return count

    async def receive(self):
        """The next whole frame or handshake message of the reliable channel. The reassembly
        state lives in the link, so a deadline that interrupts this loses nothing."""
        while True:
            message = await self._reliable_in.get()
            require(message is not None, "the native side closed the link")
            require(isinstance(message, bytes), "a text message on the reliable channel")
            require(len(message) >= 1, "an empty data-channel message")
            flags, data = message[0], message[1:]
            require(flags in (CHUNK_LAST, CHUNK_MORE), f"unknown chunk flags {flags:#04x}")
            # §8: refuse a frame that would pass the largest one before copying the chunk.
            require(len(self._partial) + len(data) <= FRAME_HEADER_LEN + MAX_FRAME_PAYLOAD,
                    "a reassembled frame over 1 MiB + 4 KiB + 2 bytes")
            self._partial += data
            if flags == CHUNK_LAST:
                whole = bytes(self._partial)
                self._partial.clear()
                return whole

    def send_unreliable(self, encoded):
        # Always one whole message, never chunked.
        require(len(encoded) <= CHUNK_DATA_LEN, "unreliable frame over one message")
        self.unreliable.send(bytes([CHUNK_LAST]) + encoded)

    async def receive_unreliable(self):
        message = await self._unreliable_in.get()
        require(isinstance(message, bytes) and message[:1] == bytes([CHUNK_LAST]),
                "an unreliable message that is not one whole chunk")
        return message[1:]


async def initiate_handshake(link, my_pk, my_sk, expected, binding):
    """Handshake v1 (§8) as initiator; refuses any identity but `expected`. Returns how many
    times M1 was sent."""
    e_secret = os.urandom(32)
    m1 = bytes([HANDSHAKE_VERSION, 1]) + s.crypto_scalarmult_base(e_secret) + os.urandom(32)
    # M1 goes out again every 200 ms until M2 arrives: a message that reaches a just-established
    # association can be lost before the far end has opened its channels (§8 "M1 repeats"). On
    # loopback M2 comes within 200 ms, so the first M1 is sent twice: the responder's rule to
    # ignore a repeat is exercised on every run.
    link.send(m1)
    sent, deadline = 1, time.monotonic() + 10
    while True:
        link.send(m1)
        sent += 1
        try:
            m2 = await asyncio.wait_for(link.receive(), M1_RESEND)
            break
        except TimeoutError:
            require(time.monotonic() < deadline, f"no M2 after sending M1 {sent} times")
    require(len(m2) == M2_LEN, f"M2 of {len(m2)} bytes, not {M2_LEN}")
    require(m2[:2] == bytes([HANDSHAKE_VERSION, 2]), f"M2 starts {m2[:2].hex()}, not 0102")
    e_r, id_r, sig_r = m2[2:34], m2[66:98], m2[98:162]
    require(id_r == expected,
            f"dialled {m.peer_id_text(expected)}, but {m.peer_id_text(id_r)} answered")
    # The transcript covers the channel binding: a splice between the two DTLS ends shows each
    # side different fingerprints, and the signatures fail.
    th2 = m.domain_hash("mesh/handshake/v1/m2", struct.pack("<I", len(binding)), binding, m1, m2[:98])
    require(m.verify_digest(id_r, th2, sig_r), "sig_R does not verify over th2")
    # WebRTC frames are not sealed (DTLS encrypts them), so the session keys derived from
    # k = X25519(e_I, e_R) go unused here; an all-zero k must still abort the handshake, and
    # libsodium refuses to compute one.
    try:
        s.crypto_scalarmult(e_secret, e_r)
    except Exception:  # noqa: BLE001 - libsodium's refusal of a low-order key
        raise Failure("X25519 with e_R gives all zeros") from None
    m3 = bytes([HANDSHAKE_VERSION, 3]) + my_pk
    th3 = m.domain_hash("mesh/handshake/v1/m3", th2, sig_r, m3)
    link.send(m3 + m.sign_digest(my_sk, th3))
    return sent


class TestPeer:
    """The native test peer as a child process: READY on stdout, logs on stderr, runs until its
    stdin closes."""

    def __init__(self, proc):
        self.proc = proc
        self.log = deque(maxlen=200)
        self._drain = asyncio.create_task(self._read_log())

    @classmethod
    async def start(cls, executable):
        return cls(await asyncio.create_subprocess_exec(
            executable, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE))

    async def _read_log(self):
        while line := await self.proc.stderr.readline():
            self.log.append(line.decode(errors="replace").rstrip())

    async def ready(self):
        raw = await self.proc.stdout.readline()
        require(raw, "the test peer closed its stdout without READY")
        line = raw.decode(errors="replace").split()
        require(len(line) == 3 and line[0] == "READY", f"expected READY <url> <peer id>, got {line}")
        return line[1], line[2]

    async def logged(self, text):
        while not any(text in line for line in self.log):
            require(self.proc.returncode is None, f"test peer exited ({self.proc.returncode})")
            await asyncio.sleep(0.05)

    async def stop(self):
        """Closes its stdin and returns its exit code; kills it if it does not exit in 5 s."""
        if self.proc.stdin and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            return await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise Failure("the test peer did not exit within 5 s of its stdin closing; killed") from None


class Run:
    """State shared by the checks, which run in order: each returns a line of detail or raises
    Failure."""

    def __init__(self, executable):
        self.executable = executable
        self.pk, self.sk, _, _ = m.keypair(os.urandom(32))  # a fresh identity (§2)
        self.peer = self.pc = self.link = None

    async def start(self):
        try:
            self.peer = await TestPeer.start(self.executable)
        except OSError as e:
            raise Failure(f"cannot run {self.executable}: {e}") from None
        self.url, native_text = await within(10, "READY from the test peer", self.peer.ready())
        require(urlsplit(self.url).hostname == "127.0.0.1", f"signaling URL {self.url} is not loopback")
        self.native = peer_id_from_text(native_text)
        return f"signaling {self.url}, peer {m.fingerprint(self.native)}"

    async def wrong_recipient(self):
        # The real offer (the one dialled with next), addressed to a stranger: only `to` differs.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.link = Link(self.pc)
        await within(10, "aiortc ICE gathering", self.pc.setLocalDescription(await self.pc.createOffer()))
        self.offer_sdp = self.pc.localDescription.sdp
        stranger = m.keypair(os.urandom(32))[0]
        offer = encode_description(OFFER, os.urandom(16), self.pk, stranger, self.offer_sdp)
        status, _ = await within(10, "signaling response", post_signal(self.url, offer))
        require(status == 400, f"HTTP {status}, not 400 (refused)")
        return "an offer to another peer id is refused with HTTP 400"

    async def connect(self):
        started = time.monotonic()
        session = os.urandom(16)
        self.offer = encode_description(OFFER, session, self.pk, self.native, self.offer_sdp)
        status, body = await within(20, "signaling answer", post_signal(self.url, self.offer))
        require(status == 200, f"HTTP {status} ({body[:200]!r}), not 200")
        kind, answer_session, sender, recipient, self.answer_sdp = decode_description(body)
        require(kind == ANSWER, f"description kind {kind}, not answer")
        require(answer_session == session, "the answer does not repeat the offer's session id")
        require(sender == self.native and recipient == self.pk,
                "the answer is not from the dialled peer to us")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=self.answer_sdp, type="answer"))
        await within(10, "both data channels open", self.link.wait_open())
        return (f"answer (HTTP 200) for our session; ICE, DTLS, SCTP up and channels mesh#0, "
                f"mesh-unreliable#1 open in {time.monotonic() - started:.2f} s")

    async def handshake(self):
        # Channel binding (§8): the offerer's DTLS certificate fingerprint, then the answerer's.
        # Ours is the certificate aiortc presents; aiortc accepted the native side's DTLS
        # certificate only if it matches the answer's fingerprints, so the SDP value is the
        # certificate in use.
        local = next(f.value for f in self.pc.sctp.transport.getLocalParameters().fingerprints
                     if f.algorithm == "sha-256")
        binding = BINDING_LABEL + parse_fingerprint(local) + sdp_sha256_fingerprint(self.answer_sdp)
        sent = await within(12, "handshake", initiate_handshake(
            self.link, self.pk, self.sk, self.native, binding))
        # The test peer logs the identity its side of the handshake proved.
        await within(5, "the native side accepting M3 (its log line for our link)",
                     self.peer.logged(f"link from {m.peer_id_text(self.pk)}"))
        return (f"native side proved the READY identity, and accepted ours "
                f"({m.fingerprint(self.pk)}); M1 sent {sent} times, the repeats ignored")

    async def echo(self, size):
        # Random, but for a first byte that is not the test peer's unreliable marker.
        payload = b"\x00" + os.urandom(size - 1) if size else b""
        sent = encode_frame(ECHO_PROTOCOL, payload)
        started = time.monotonic()
        messages = self.link.send(sent)
        got = await within(15, f"echo of {size} bytes", self.link.receive())
        check_frame(got)
        require(got == sent, f"echo differs: {len(got)} bytes back for {len(sent)}, "
                             f"first difference at byte {first_difference(got, sent)}")
        return f"{size:,} B payload in {messages} message(s), echoed in {time.monotonic() - started:.2f} s"

    async def unreliable(self):
        payload = bytes([UNRELIABLE_MARK]) + os.urandom(MAX_UNRELIABLE_PAYLOAD - 1)
        sent = encode_frame(ECHO_PROTOCOL, payload)
        # The channel may lose a message (either way), so it is sent up to five times.
        for attempt in range(1, 6):
            self.link.send_unreliable(sent)
            try:
                got = await asyncio.wait_for(self.link.receive_unreliable(), 1)
            except TimeoutError:
                continue
            check_frame(got)
            require(got == sent, f"unreliable echo differs at byte {first_difference(got, sent)}")
            return (f"{len(payload):,} B payload (the largest: one 16 KiB message) echoed on "
                    f"mesh-unreliable, attempt {attempt}")
        raise Failure("no echo on the unreliable channel after 5 attempts")

    async def ping(self):
        seq = int.from_bytes(os.urandom(8), "little")
        started = time.monotonic()
        self.link.send(encode_frame(CONTROL, bytes([PING]) + struct.pack("<Q", seq)))
        got = await within(5, "pong", self.link.receive())
        want = encode_frame(CONTROL, bytes([PONG]) + struct.pack("<Q", seq))
        require(got == want, f"expected pong {want.hex()}, got {got[:16].hex()}")
        return f"pong with the same sequence number in {(time.monotonic() - started) * 1000:.1f} ms"

    async def replay(self):
        status, _ = await within(10, "signaling response", post_signal(self.url, self.offer))
        require(status == 400, f"HTTP {status}, not 400 (refused)")
        return "the same offer (session id) again is refused with HTTP 400"

    async def close(self):
        self.link.send(encode_frame(CONTROL, bytes([CLOSE])))
        await within(5, "the native side ending the link", self.link.closed.wait())
        await within(5, "the test peer's log of the link's end",
                     self.peer.logged(f"link from {m.peer_id_text(self.pk)} ended"))
        return "after our close frame the native side ended the link and closed the connection"

    async def stop(self):
        code = await self.peer.stop()
        require(code == 0, f"test peer exit code {code}")
        return "test peer exited 0 once its stdin closed"

    async def teardown(self):
        if self.pc is not None:
            try:
                await asyncio.wait_for(self.pc.close(), 3)
            except TimeoutError:
                print("warning: aiortc did not close within 3 s", file=sys.stderr)
        if self.peer is not None and self.peer.proc.returncode is None:
            try:
                await self.peer.stop()
            except Failure as e:
                print(f"warning: {e}", file=sys.stderr)


async def run(executable):
    r = Run(executable)
    checks = [
        ("start", r.start),
        ("wrong-recipient", r.wrong_recipient),
        ("connect", r.connect),
        ("handshake", r.handshake),
        ("reliable-0", lambda: r.echo(0)),
        ("reliable-1000", lambda: r.echo(1000)),
        ("reliable-100000", lambda: r.echo(100_000)),
        ("reliable-max", lambda: r.echo(MAX_FRAME_PAYLOAD)),
        ("unreliable", r.unreliable),
        ("ping", r.ping),
        ("replay", r.replay),
        ("close", r.close),
        ("stop", r.stop),
    ]
    started, current = time.monotonic(), "start"
    try:
        async with asyncio.timeout(RUN_DEADLINE):
            for current, check in checks:
                print(f"ok   {current:<16} {await check()}", flush=True)
    except Failure as e:
        print(f"FAIL {current:<16} {e}", flush=True)
    except TimeoutError:
        print(f"FAIL {current:<16} the run passed its {RUN_DEADLINE} s deadline", flush=True)
    except Exception as e:  # noqa: BLE001 - aiortc refusing a send, a bug here: still one line
        print(f"FAIL {current:<16} {type(e).__name__}: {e}", flush=True)
    else:
        print(f"PASS {len(checks)} checks in {time.monotonic() - started:.1f} s", flush=True)
        return 0
    finally:
        await r.teardown()
    if r.peer is not None and r.peer.log:
        print("test peer stderr (last lines):", *list(r.peer.log)[-20:], sep="\n  ", file=sys.stderr)
    return 1


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} TEST_PEER_EXECUTABLE")
    # aioice gathers on every interface except loopback, and this check stays on 127.0.0.1:
    # its host-address lookup is replaced (which is why requirements.txt pins aioice too).
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

    # Last resort should aiortc or the child hang where no deadline reaches (teardown): the
    # test peer exits by itself once our end of its stdin is gone.
    def give_up():
        print(f"FAIL watchdog: still running after {HARD_LIMIT} s", file=sys.stderr, flush=True)
        os._exit(2)

    watchdog = threading.Timer(HARD_LIMIT, give_up)
    watchdog.daemon = True
    watchdog.start()
    sys.exit(asyncio.run(run(sys.argv[1])))


if __name__ == "__main__":
    main()
