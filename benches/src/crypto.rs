//! mesh-crypto: seal and open of 1 KiB and 1 MiB envelopes, sign and verify.
//! The same composition in libsodium (`interop/python/bench_crypto.py`) is the baseline.

use std::time::Duration;

use mesh_crypto::{Identity, envelope};

use crate::timing::{Measurement, measure};

const CONTEXT: &[u8] = b"mesh/message";

/// Runs the suite with `budget` per operation.
pub(crate) fn run(budget: Duration) -> Vec<Measurement> {
    let alice = Identity::from_seed(&[1; 32]);
    let bob = Identity::from_seed(&[2; 32]);
    let bob_id = bob.peer_id();
    let mut out = Vec::new();
    for (label, size) in [("1 KiB", 1024usize), ("1 MiB", 1024 * 1024)] {
        let plaintext = vec![0x42u8; size];
        let sealed = envelope::seal(&alice, &bob_id, CONTEXT, &plaintext).unwrap_or_default();
        out.push(measure(
            &format!("seal {label}"),
            size as u64,
            budget,
            || envelope::seal(&alice, &bob_id, CONTEXT, &plaintext),
        ));
        out.push(measure(
            &format!("open {label}"),
            size as u64,
            budget,
            || envelope::open(&bob, &sealed, CONTEXT),
        ));
    }
    let message = vec![7u8; 1024];
    let signature = alice.sign("mesh/bench/v1", &message);
    let alice_id = alice.peer_id();
    out.push(measure("sign 1 KiB", 1024, budget, || {
        alice.sign("mesh/bench/v1", &message)
    }));
    out.push(measure("verify 1 KiB", 1024, budget, || {
        alice_id.verify("mesh/bench/v1", &message, &signature)
    }));
    out
}
