//! Files between peers: the content is a private blob (encrypted to the recipient, see
//! [`mesh_blob::private`]) kept by the sender, and a message carries a [`FileOffer`]: the
//! blob's id, the file's size and name, and the key envelope. The recipient fetches the blob
//! from the sender (chunk by verified chunk, over any link), keeps it in its own blob store and
//! decrypts it from there, also later, without the network.
//!
//! A file offer is the body of an ordinary message (`docs/PROTOCOL.md` §15, "File offers"):
//!
//! ```text
//! magic [4] = 00 6d 66 01 | blob id [32] | size u64 (plaintext bytes) |
//! name_len u8 | name [name_len] (UTF-8, no '/', '\', control characters) | key envelope
//! ```
//!
//! Text messages never start with a NUL byte, so applications tell offers from text by
//! [`FileOffer::decode`].

use mesh_blob::manifest::BlobId;
use mesh_blob::private::{PrivateError, encrypted_len, get_private, put_private};
use mesh_blob::store::{BlobConfig, PutOptions};
use mesh_blob::transfer::FetchError;
use mesh_crypto::{Hash256, PeerId, UnixMillis};
use mesh_platform::runtime::Runtime;
use mesh_transport::Transport;

use crate::messaging::MessagingError;
use crate::node::Node;

/// The first bytes of a file offer.
pub const FILE_MAGIC: [u8; 4] = [0x00, b'm', b'f', 0x01];
/// Longest file name, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Longest key envelope accepted in an offer (one is 270 bytes).
pub const MAX_KEY_LEN: usize = 1024;
/// Largest size an offer may announce: 2^48 bytes, far above any blob a store takes, and low
/// enough that its encrypted size cannot overflow.
pub const MAX_OFFER_SIZE: u64 = 1 << 48;
/// How long a sender keeps a file for its recipient to fetch (a week), by default.
pub const DEFAULT_HOLD_MS: u64 = 7 * 24 * 3600 * 1000;

/// How a sender keeps a file it offers: until [`DEFAULT_HOLD_MS`] after `now`, not pinned.
pub fn sender_hold(now: UnixMillis) -> PutOptions {
    PutOptions {
        expires_at: Some(UnixMillis(now.0.saturating_add(DEFAULT_HOLD_MS))),
        pinned: false,
    }
}

/// How a recipient keeps a file it fetched: pinned, until the application deletes it.
pub const RECIPIENT_HOLD: PutOptions = PutOptions {
    expires_at: None,
    pinned: true,
};

/// The largest file a store with `config` can keep encrypted: the largest plaintext whose
/// encrypted size fits `config.max_blob_size` (0 when not even an empty one does).
pub fn max_file_len(config: &BlobConfig) -> u64 {
    // encrypted_len only grows: binary search for the last length that fits.
    let max = config.max_blob_size;
    let (mut lo, mut hi) = (0u64, max.min(MAX_OFFER_SIZE));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if encrypted_len(mid) <= max {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// A file offered in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOffer {
    /// The private blob holding the encrypted content.
    pub blob: BlobId,
    /// Plaintext size in bytes.
    pub size: u64,
    /// The file's name, as the sender gave it (checked by [`valid_name`]).
    pub name: String,
    /// The content key, sealed to the recipient and bound to `blob`.
    pub key: Vec<u8>,
}

/// Errors of file transfers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The name is empty, too long, or has path separators or control characters.
    #[error("invalid file name")]
    InvalidName,
    /// Encrypting, storing, or decrypting the content.
    #[error(transparent)]
    Private(#[from] PrivateError),
    /// Sending the offer.
    #[error(transparent)]
    Messaging(#[from] MessagingError),
    /// Fetching the blob.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The decrypted content is not what the offer announced.
    #[error("the file is {got} bytes, the offer said {want}")]
    SizeMismatch {
        /// Announced.
        want: u64,
        /// Found.
        got: u64,
    },
}

/// Whether `name` may name a file: 1 to [`MAX_NAME_LEN`] bytes; not `.` or `..`, nor ending in
/// a dot or a space; without path separators, characters Windows refuses in names
/// (`<>:"|?*`), control characters, or the invisible formatting characters that reorder or
/// hide text (bidirectional overrides such as U+202E, which would show `cod.exe` as
/// `exe.doc`; zero-width characters; the byte order mark). A name is shown and saved by the
/// recipient; applications still choose where to save it.
pub fn valid_name(name: &str) -> bool {
    const FORMATTING: [(char, char); 5] = [
        ('\u{061c}', '\u{061c}'),
        ('\u{200b}', '\u{200f}'),
        ('\u{202a}', '\u{202e}'),
        ('\u{2060}', '\u{2069}'),
        ('\u{feff}', '\u{feff}'),
    ];
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.ends_with(['.', ' '])
        && !name.chars().any(|c| {
            c.is_control()
                || "/\\<>:\"|?*".contains(c)
                || FORMATTING.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c))
        })
}

impl FileOffer {
    /// The message body carrying this offer.
    pub fn encode(&self) -> Vec<u8> {
        let name = self.name.as_bytes();
        let mut out = Vec::with_capacity(4 + 32 + 8 + 1 + name.len() + self.key.len());
        out.extend_from_slice(&FILE_MAGIC);
        out.extend_from_slice(&self.blob.0.0);
        out.extend_from_slice(&self.size.to_le_bytes());
        debug_assert!(valid_name(&self.name), "offers are made with valid names");
        // valid_name bounds it by MAX_NAME_LEN (255); a longer name is cut at a char boundary.
        let mut end = name.len().min(MAX_NAME_LEN);
        while !self.name.is_char_boundary(end) {
            end -= 1;
        }
        #[allow(clippy::cast_possible_truncation)] // at most 255
        out.push(end as u8);
        out.extend_from_slice(&name[..end]);
        out.extend_from_slice(&self.key);
        out
    }

    /// The offer in a message body, or `None` if the body is not a well-formed offer (an
    /// ordinary message, or a malformed one, which applications show as bytes or drop).
    pub fn decode(body: &[u8]) -> Option<Self> {
        let rest = body.strip_prefix(&FILE_MAGIC)?;
        let (blob, rest) = rest.split_first_chunk::<32>()?;
        let (size, rest) = rest.split_first_chunk::<8>()?;
        let (&name_len, rest) = rest.split_first()?;
        let (name, key) = rest.split_at_checked(usize::from(name_len))?;
        let name = std::str::from_utf8(name).ok()?;
        let size = u64::from_le_bytes(*size);
        if !valid_name(name) || key.is_empty() || key.len() > MAX_KEY_LEN || size > MAX_OFFER_SIZE {
            return None;
        }
        Some(Self {
            blob: BlobId(Hash256(*blob)),
            size,
            name: name.to_string(),
            key: key.to_vec(),
        })
    }

    /// Bytes the encrypted blob takes (what the recipient fetches and stores).
    pub fn stored_size(&self) -> u64 {
        encrypted_len(self.size)
    }
}

impl<T: Transport + 'static, R: Runtime> Node<T, R> {
    /// Sends `data` as file `name` to `to`: encrypts it to `to`, keeps the blob (held by this
    /// node until `hold.expires_at`, or pinned), and sends the offer as a message. Returns the
    /// message's id (its receipt names it) and the offer.
    ///
    /// # Errors
    /// [`FileError::InvalidName`]; the blob store's refusal (too large, quota); messaging's.
    pub async fn send_file(
        &self,
        to: PeerId,
        name: &str,
        data: &[u8],
        hold: PutOptions,
    ) -> Result<(Hash256, FileOffer), FileError> {
        if !valid_name(name) {
            return Err(FileError::InvalidName);
        }
        let now = self.pool.runtime().unix_time();
        let (stored, key) = put_private(
            self.blobs.store(),
            &self.identity,
            &to,
            data,
            self.peer_id(),
            hold,
            now,
        )
        .await?;
        let offer = FileOffer {
            blob: stored.id,
            size: data.len() as u64,
            name: name.to_string(),
            key,
        };
        let id = self.messenger.send(to, &offer.encode()).await?;
        Ok((id, offer))
    }

    /// Fetches the file of `offer` (from `from`, its sender, who keeps it: over an open link,
    /// or at the address the DHT knows) into this node's blob store, held with `hold`, and
    /// returns its content. A file already stored is not fetched again.
    ///
    /// # Errors
    /// [`FileError::Fetch`] when the sender cannot be reached or does not have it;
    /// [`FileError::Private`] when the key is not for this node or this blob, or the content
    /// does not decrypt; [`FileError::SizeMismatch`].
    pub async fn receive_file(
        &self,
        offer: &FileOffer,
        from: PeerId,
        hold: PutOptions,
    ) -> Result<Vec<u8>, FileError> {
        let store = self.blobs.store();
        if store
            .contains(&offer.blob)
            .await
            .map_err(PrivateError::from)?
        {
            return self.open_file(offer).await;
        }
        let address = match self.pool.address_of(&from) {
            Some(a) => a,
            None => self.locate(from).await.ok().flatten().unwrap_or_default(),
        };
        self.blobs
            .fetch(offer.blob, &[(from, address)], self.peer_id(), hold)
            .await?;
        let opened = self.open_file(offer).await;
        if opened.is_err() {
            // Not what was offered (a sender that lies about the size, or a key for someone
            // else): drop this node's hold rather than keep an unreadable blob.
            let _ = store.delete(&offer.blob, &self.peer_id()).await;
        }
        opened
    }

    /// The content of a file this node has stored (after [`Node::receive_file`]), decrypted.
    ///
    /// # Errors
    /// As [`Node::receive_file`], without fetching.
    pub async fn open_file(&self, offer: &FileOffer) -> Result<Vec<u8>, FileError> {
        let data = get_private(self.blobs.store(), &offer.blob, &self.identity, &offer.key).await?;
        if data.len() as u64 != offer.size {
            return Err(FileError::SizeMismatch {
                want: offer.size,
                got: data.len() as u64,
            });
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn offer(name: &str) -> FileOffer {
        FileOffer {
            blob: BlobId(Hash256([7; 32])),
            size: 123_456,
            name: name.to_string(),
            key: vec![9; 180],
        }
    }

    #[test]
    fn offers_round_trip_and_text_is_not_an_offer() {
        let o = offer("report ü.pdf");
        let body = o.encode();
        assert_eq!(FileOffer::decode(&body), Some(o.clone()));
        assert_eq!(&body[..4], &FILE_MAGIC);
        assert_eq!(o.stored_size(), encrypted_len(123_456));
        for text in [&b"hello"[..], b"", b"\x00mf", b"\x00mf\x02rest"] {
            assert_eq!(FileOffer::decode(text), None);
        }
    }

    #[test]
    fn malformed_offers_are_refused() {
        let body = offer("a.txt").encode();
        // Every truncation that leaves no key is refused.
        for cut in 0..=(4 + 32 + 8 + 1 + 5) {
            assert_eq!(FileOffer::decode(&body[..cut]), None, "cut at {cut}");
        }
        // A name length running past the end.
        let mut long = body[..4 + 32 + 8].to_vec();
        long.push(200);
        long.extend_from_slice(b"short");
        assert_eq!(FileOffer::decode(&long), None);
        // Not UTF-8, a path, a control character, an oversized key.
        for name in [&b"\xff\xfe"[..], b"../x", b"a/b", b"a\\b", b"a\nb", b".."] {
            let mut b = body[..4 + 32 + 8].to_vec();
            b.push(u8::try_from(name.len()).unwrap());
            b.extend_from_slice(name);
            b.extend_from_slice(&[1; 100]);
            assert_eq!(FileOffer::decode(&b), None, "{name:?}");
        }
        let mut big = offer("a").encode();
        big.extend_from_slice(&[0; MAX_KEY_LEN]);
        assert_eq!(FileOffer::decode(&big), None);
        // A size no store could hold (its encrypted size would overflow).
        let mut huge = offer("a");
        huge.size = u64::MAX;
        assert_eq!(FileOffer::decode(&huge.encode()), None);
        huge.size = MAX_OFFER_SIZE;
        assert!(FileOffer::decode(&huge.encode()).is_some());
    }

    #[test]
    fn the_largest_file_fits_the_store_exactly() {
        for max in [10 << 20, 65_536 + 40, 1, 1000, 64 << 20] {
            let config = BlobConfig {
                max_blob_size: max,
                ..BlobConfig::default()
            };
            let n = max_file_len(&config);
            // 0 when not even an empty file fits (1 byte).
            assert!(
                encrypted_len(n) <= max || (n == 0 && max < encrypted_len(0)),
                "{max}"
            );
            assert!(
                n == 0 || encrypted_len(n + 1) > max,
                "{max}: {n} is the largest"
            );
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("photo.jpg"));
        assert!(valid_name(&"é".repeat(127)));
        assert!(!valid_name(&"é".repeat(128)));
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "c:\\x",
            "tab\there",
            "nul\0",
            "invoice\u{202e}fdp.exe",
            "zero\u{200b}width",
            "trailing.",
            "trailing ",
            "what?",
            "a:b",
            "\u{feff}bom",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
