//! Manual pairing: descriptions as signed text to copy and paste or show as a QR code.
//!
//! The text is `mesh://webrtc/` followed by the base64url (no padding) of a
//! [`Signed`]`<`[`Description`]`>` (see `docs/PROTOCOL.md`): the person pasting it sees who made
//! it (the fingerprint of `from`) and that it is for them before anything connects. The
//! handshake on the connected channel still proves both identities.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use mesh_crypto::{Identity, PeerId, Signed};
use mesh_platform::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

use super::{IncomingOffer, Responder, Signaling, SignalingError};
use crate::wire::{Description, DescriptionKind};

/// Prefix of pairing text.
pub const PAIRING_PREFIX: &str = "mesh://webrtc/";
/// How long pairing text stays valid: long enough to walk over and scan it.
pub const PAIRING_VALIDITY_MS: u64 = 10 * 60 * 1000;
/// Texts waiting to be shown; more block the exchange until shown.
const OUTBOX: usize = 8;
/// Offers pasted but not yet taken by the transport.
const INBOX: usize = 8;

type Waiters = Arc<Mutex<HashMap<[u8; 16], oneshot::Sender<Vec<u8>>>>>;

/// What a pasted text was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pasted {
    /// Offer or answer.
    pub kind: DescriptionKind,
    /// Who made it (its signature verified).
    pub from: PeerId,
}

/// Signaling by text the user carries between devices.
pub struct ManualSignaling<R: Runtime> {
    identity: Arc<Identity>,
    runtime: R,
    outbox_tx: mpsc::Sender<String>,
    outbox_rx: tokio::sync::Mutex<mpsc::Receiver<String>>,
    inbox_tx: mpsc::Sender<IncomingOffer>,
    inbox_rx: tokio::sync::Mutex<mpsc::Receiver<IncomingOffer>>,
    waiters: Waiters,
}

impl<R: Runtime> std::fmt::Debug for ManualSignaling<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManualSignaling")
            .field("own", &self.identity.peer_id())
            .finish_non_exhaustive()
    }
}

fn sign_text<R: Runtime>(
    identity: &Identity,
    runtime: &R,
    description: Description,
) -> Result<String, SignalingError> {
    if description.from != identity.peer_id() {
        return Err(SignalingError::Refused(
            "description is not from this identity".into(),
        ));
    }
    let now = runtime.unix_time();
    let signed = Signed::sign(
        identity,
        description,
        now,
        now.saturating_add(PAIRING_VALIDITY_MS),
    )
    .map_err(|e| SignalingError::Malformed(e.to_string()))?;
    Ok(format!(
        "{PAIRING_PREFIX}{}",
        data_encoding::BASE64URL_NOPAD.encode(signed.as_bytes())
    ))
}

impl<R: Runtime> ManualSignaling<R> {
    /// Manual signaling for `identity` (the transport's), reading time from `runtime`.
    pub fn new(identity: Arc<Identity>, runtime: R) -> Self {
        let (outbox_tx, outbox_rx) = mpsc::channel(OUTBOX);
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX);
        Self {
            identity,
            runtime,
            outbox_tx,
            outbox_rx: tokio::sync::Mutex::new(outbox_rx),
            inbox_tx,
            inbox_rx: tokio::sync::Mutex::new(inbox_rx),
            waiters: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The next text to show the other person (an offer while dialling, an answer while
    /// accepting).
    pub async fn next_text(&self) -> Option<String> {
        self.outbox_rx.lock().await.recv().await
    }

    /// Takes text the user pasted or scanned: an offer is queued for the transport to answer,
    /// an answer completes the matching dial.
    ///
    /// # Errors
    /// [`SignalingError::Malformed`] for text that does not decode or verify, or whose signer
    /// is not its `from`; [`SignalingError::Refused`] for text meant for someone else, an
    /// answer nobody waits for, or a full queue.
    pub fn paste(&self, text: &str) -> Result<Pasted, SignalingError> {
        let text = text.trim();
        let b64 = text
            .strip_prefix(PAIRING_PREFIX)
            .ok_or_else(|| SignalingError::Malformed("not a mesh pairing text".into()))?;
        if b64.len() > 4 * super::MAX_SIGNALING_MESSAGE / 3 + 4 {
            return Err(SignalingError::TooLarge {
                len: b64.len(),
                max: 4 * super::MAX_SIGNALING_MESSAGE / 3 + 4,
            });
        }
        let bytes = data_encoding::BASE64URL_NOPAD
            .decode(b64.as_bytes())
            .map_err(|_| SignalingError::Malformed("pairing text is not base64url".into()))?;
        let signed = Signed::<Description>::decode(&bytes, self.runtime.unix_time())
            .map_err(|e| SignalingError::Malformed(e.to_string()))?;
        let d = signed.payload();
        if *signed.author() != d.from {
            return Err(SignalingError::Malformed(
                "pairing text signed by someone other than its sender".into(),
            ));
        }
        if d.to != self.identity.peer_id() {
            return Err(SignalingError::Refused(format!(
                "pairing text is for {}, not this peer",
                d.to
            )));
        }
        let pasted = Pasted {
            kind: d.kind,
            from: d.from,
        };
        match d.kind {
            DescriptionKind::Offer => {
                let responder = Box::new(ManualResponder {
                    identity: self.identity.clone(),
                    runtime: self.runtime.clone(),
                    outbox: self.outbox_tx.clone(),
                });
                let offer = IncomingOffer {
                    offer: d
                        .encode()
                        .map_err(|e| SignalingError::Malformed(e.to_string()))?,
                    responder,
                };
                self.inbox_tx
                    .try_send(offer)
                    .map_err(|_| SignalingError::Refused("too many offers waiting".into()))?;
            }
            DescriptionKind::Answer => {
                let waiter = self
                    .waiters
                    .lock()
                    .map_err(|_| SignalingError::Closed)?
                    .remove(&d.session)
                    .ok_or_else(|| {
                        SignalingError::Refused("no dial is waiting for this answer".into())
                    })?;
                let bytes = d
                    .encode()
                    .map_err(|e| SignalingError::Malformed(e.to_string()))?;
                waiter.send(bytes).map_err(|_| SignalingError::Closed)?;
            }
        }
        Ok(pasted)
    }
}

struct ManualResponder<R: Runtime> {
    identity: Arc<Identity>,
    runtime: R,
    outbox: mpsc::Sender<String>,
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl<R: Runtime> Responder for ManualResponder<R> {
    async fn answer(self: Box<Self>, answer: Vec<u8>) -> Result<(), SignalingError> {
        let d =
            Description::decode(&answer).map_err(|e| SignalingError::Malformed(e.to_string()))?;
        let text = sign_text(&self.identity, &self.runtime, d)?;
        self.outbox
            .send(text)
            .await
            .map_err(|_| SignalingError::Closed)
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
impl<R: Runtime> Signaling for ManualSignaling<R> {
    /// Publishes the offer as text ([`ManualSignaling::next_text`]) and waits until the answer
    /// is pasted. `address` is unused.
    async fn exchange(
        &self,
        to: PeerId,
        _address: &str,
        offer: Vec<u8>,
    ) -> Result<Vec<u8>, SignalingError> {
        let d =
            Description::decode(&offer).map_err(|e| SignalingError::Malformed(e.to_string()))?;
        if d.to != to {
            return Err(SignalingError::Refused("offer is for another peer".into()));
        }
        let session = d.session;
        let text = sign_text(&self.identity, &self.runtime, d)?;
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .map_err(|_| SignalingError::Closed)?
            .insert(session, tx);
        let waiters = self.waiters.clone();
        let _guard = crate::on_drop(move || {
            if let Ok(mut w) = waiters.lock() {
                w.remove(&session);
            }
        });
        self.outbox_tx
            .send(text)
            .await
            .map_err(|_| SignalingError::Closed)?;
        rx.await.map_err(|_| SignalingError::Closed)
    }

    async fn incoming(&self) -> Result<IncomingOffer, SignalingError> {
        self.inbox_rx
            .lock()
            .await
            .recv()
            .await
            .ok_or(SignalingError::Closed)
    }
}
