//! Two peers, one sealed and signed message, a relay that checks it without reading it, and a
//! tampered copy that is refused. Run: `cargo run -p mesh-crypto --example envelope`.

#![allow(clippy::print_stdout)]

use mesh_crypto::envelope::{self, MAX_PLAINTEXT_LEN};
use mesh_crypto::{Error, Identity, safety_number};

fn main() -> Result<(), Error> {
    let alice = Identity::generate();
    let bob = Identity::generate();
    println!(
        "alice  {}  ({})",
        alice.peer_id(),
        alice.peer_id().fingerprint()
    );
    println!(
        "bob    {}  ({})",
        bob.peer_id(),
        bob.peer_id().fingerprint()
    );
    println!(
        "safety number, compare out of band: {}",
        safety_number(&alice.peer_id(), &bob.peer_id())
    );

    let message = b"meet at the usual place";
    let sealed = envelope::seal(&alice, &bob.peer_id(), b"mesh/message", message)?;
    println!(
        "\nsealed {} bytes of plaintext into a {}-byte envelope",
        message.len(),
        sealed.len()
    );

    let seen_by_relay = envelope::verify(&sealed, MAX_PLAINTEXT_LEN)?;
    println!(
        "relay: signature ok, from {} to {}, id {} (cannot read it)",
        seen_by_relay.sender.fingerprint(),
        seen_by_relay.recipient.fingerprint(),
        seen_by_relay.id
    );

    let opened = envelope::open(&bob, &sealed, b"mesh/message")?;
    println!(
        "bob opened: {:?} from {}",
        String::from_utf8_lossy(&opened.plaintext),
        opened.sender.fingerprint()
    );

    let mut tampered = sealed.clone();
    tampered[200] ^= 1;
    for (what, result) in [
        (
            "tampered copy",
            envelope::open(&bob, &tampered, b"mesh/message"),
        ),
        (
            "wrong reader",
            envelope::open(&alice, &sealed, b"mesh/message"),
        ),
    ] {
        match result {
            Err(e) => println!("{what}: refused ({e})"),
            Ok(_) => println!("{what}: ACCEPTED, which must never happen"),
        }
    }
    Ok(())
}
