//! Dialling and answering, written once over [`RtcPeer`] so the native and browser backends run
//! the same steps: descriptions through signaling, channels open, fingerprints, handshake.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use mesh_crypto::{Identity, PeerId};
use mesh_platform::MaybeSend;
use mesh_platform::runtime::Runtime;
use mesh_transport::TransportError;
use mesh_transport::handshake::{HandshakeError, Initiator, Responder};

use crate::signaling::{IncomingOffer, Signaling, SignalingError};
use crate::wire::{self, Description, DescriptionKind, Reassembler};

/// How often the first handshake message is repeated until answered.
///
/// A message that reaches a negotiated channel in the instant between the SCTP association
/// coming up at the far end and that end opening its channels can be lost (webrtc-rs 0.21
/// does this). Only the first message of a link is exposed: everything after it is sent in
/// reply to the other side. So M1 is repeated and the responder ignores repeats.
pub(crate) const HANDSHAKE_RESEND: Duration = Duration::from_millis(200);

/// What the session logic needs of a peer connection with our two channels.
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
pub(crate) trait RtcPeer: MaybeSend {
    /// Creates the offer, sets it locally and returns its SDP once ICE gathering completed.
    async fn create_offer(&mut self) -> Result<String, TransportError>;
    /// Applies a remote offer, creates the answer and returns its SDP once gathered.
    async fn create_answer(&mut self, offer: &str) -> Result<String, TransportError>;
    /// Applies the remote answer to our offer.
    async fn accept_answer(&mut self, answer: &str) -> Result<(), TransportError>;
    /// Waits until both channels are open.
    async fn wait_open(&mut self) -> Result<(), TransportError>;
    /// The SHA-256 DTLS certificate fingerprints actually in use: (local, remote).
    async fn fingerprints(&self) -> Result<([u8; 32], [u8; 32]), TransportError>;
    /// Sends one data-channel message on the reliable channel.
    async fn send_message(&self, message: &[u8]) -> Result<(), TransportError>;
    /// The next message of the reliable channel.
    async fn recv_message(&mut self) -> Result<Vec<u8>, TransportError>;
}

async fn send_raw<P: RtcPeer + ?Sized>(p: &P, bytes: &[u8]) -> Result<(), TransportError> {
    for chunk in wire::chunks(bytes) {
        p.send_message(&chunk).await?;
    }
    Ok(())
}

async fn recv_raw<P: RtcPeer + ?Sized>(p: &mut P) -> Result<Vec<u8>, TransportError> {
    let mut r = Reassembler::default();
    loop {
        if let Some(b) = r.push(&p.recv_message().await?)? {
            return Ok(b);
        }
    }
}

/// Sends `message` and returns the reply, repeating it every [`HANDSHAKE_RESEND`].
async fn send_until_answered<P: RtcPeer + ?Sized, R: Runtime>(
    p: &mut P,
    runtime: &R,
    message: &[u8],
) -> Result<Vec<u8>, TransportError> {
    send_raw(p, message).await?;
    loop {
        let resend = runtime.sleep(HANDSHAKE_RESEND);
        let reply = {
            let reply = recv_raw(p);
            tokio::pin!(reply);
            tokio::select! {
                r = &mut reply => Some(r),
                () = resend => None,
            }
        };
        match reply {
            Some(r) => return r,
            None => send_raw(p, message).await?,
        }
    }
}

fn signaling_err(e: SignalingError) -> TransportError {
    match e {
        SignalingError::Timeout => TransportError::Timeout,
        SignalingError::Closed => TransportError::Closed,
        e => TransportError::Unreachable(format!("signaling: {e}")),
    }
}

/// Dials `peer` through `signaling` on the fresh peer connection `p` and runs the handshake
/// as initiator; returns the proven remote identity.
pub(crate) async fn dial<P: RtcPeer + ?Sized, S: Signaling + ?Sized, R: Runtime>(
    p: &mut P,
    runtime: &R,
    identity: &Identity,
    signaling: &S,
    peer: PeerId,
    address: &str,
) -> Result<PeerId, TransportError> {
    let sdp = p.create_offer().await?;
    let mut session = [0u8; 16];
    dryoc::rng::copy_randombytes(&mut session);
    let offer = Description {
        kind: DescriptionKind::Offer,
        session,
        from: identity.peer_id(),
        to: peer,
        sdp,
    };
    let answer = signaling
        .exchange(peer, address, offer.encode()?)
        .await
        .map_err(signaling_err)?;
    let answer = Description::decode(&answer)?;
    if answer.kind != DescriptionKind::Answer
        || answer.session != session
        || answer.from != peer
        || answer.to != identity.peer_id()
    {
        return Err(TransportError::Malformed("answer does not match the offer"));
    }
    p.accept_answer(&answer.sdp).await?;
    p.wait_open().await?;
    let (local, remote) = p.fingerprints().await?;
    let binding = wire::channel_binding(&local, &remote);
    let (initiator, m1) = Initiator::start(&binding, Some(peer))?;
    let m2 = send_until_answered(p, runtime, &m1).await?;
    let (m3, session) = initiator.on_m2(identity, &m2)?;
    send_raw(p, &m3).await?;
    Ok(session.remote)
}

/// Session ids of offers answered recently: a replayed offer is refused.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    set: HashSet<[u8; 16]>,
    order: VecDeque<[u8; 16]>,
}

impl Seen {
    const CAP: usize = 4096;

    /// Records `id`; false if it was seen already.
    pub(crate) fn insert(&mut self, id: [u8; 16]) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > Self::CAP
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// Checks an incoming offer: well-formed, for `identity`, not seen before.
pub(crate) fn check_offer(
    identity: &Identity,
    seen: &std::sync::Mutex<Seen>,
    incoming: &IncomingOffer,
) -> Result<Description, TransportError> {
    let offer = Description::decode(&incoming.offer)?;
    if offer.kind != DescriptionKind::Offer || offer.to != identity.peer_id() {
        return Err(TransportError::Malformed("not an offer for this peer"));
    }
    if !seen
        .lock()
        .map_err(|_| TransportError::Closed)?
        .insert(offer.session)
    {
        return Err(TransportError::Replay);
    }
    Ok(offer)
}

/// Answers the checked `offer` on the fresh peer connection `p` and runs the handshake as
/// responder; returns the proven remote identity, which must be the offer's sender.
pub(crate) async fn answer<P: RtcPeer + ?Sized>(
    p: &mut P,
    identity: &Identity,
    offer: Description,
    responder: Box<dyn crate::signaling::Responder>,
) -> Result<PeerId, TransportError> {
    let sdp = p.create_answer(&offer.sdp).await?;
    let answer = Description {
        kind: DescriptionKind::Answer,
        session: offer.session,
        from: identity.peer_id(),
        to: offer.from,
        sdp,
    };
    responder
        .answer(answer.encode()?)
        .await
        .map_err(signaling_err)?;
    p.wait_open().await?;
    let (local, remote) = p.fingerprints().await?;
    let binding = wire::channel_binding(&remote, &local);
    let m1 = recv_raw(p).await?;
    let (responder, m2) = Responder::on_m1(identity, &binding, &m1)?;
    send_raw(p, &m2).await?;
    // M1 may come again (see `HANDSHAKE_RESEND`): the same bytes are not M3.
    let m3 = loop {
        let m = recv_raw(p).await?;
        if m != m1 {
            break m;
        }
    };
    let session = responder.on_m3(&m3)?;
    if session.remote != offer.from {
        return Err(HandshakeError::UnexpectedPeer {
            expected: offer.from,
            actual: session.remote,
        }
        .into());
    }
    Ok(session.remote)
}
