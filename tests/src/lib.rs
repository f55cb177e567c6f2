//! Cross-crate integration, simulation and interop tests for mesh (see `tests/`), and the
//! helpers they share.

pub mod crash;

/// The payload type of the signed-record test vectors: raw bytes under a test domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorNote(pub Vec<u8>);

impl mesh_crypto::SignedPayload for VectorNote {
    const DOMAIN: &'static str = "mesh/test-vector/v1";
    const MAX_LEN: usize = 4096;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
    fn decode(bytes: &[u8]) -> Result<Self, mesh_crypto::Error> {
        Ok(Self(bytes.to_vec()))
    }
}
