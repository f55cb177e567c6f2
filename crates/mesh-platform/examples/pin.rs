//! Prints the pin (`sha256/` + base64 of the SubjectPublicKeyInfo's SHA-256) of a certificate,
//! public key or private key file, PEM or DER:
//!
//! ```text
//! cargo run -p mesh-platform --features pinning --example pin -- server.crt backup-key.pem
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use mesh_platform::pinning::{pin_of_certificate, pin_of_spki, pin_to_string};
use rcgen::PublicKeyData;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer};

fn pin_of_file(path: &str) -> Result<(String, [u8; 32]), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("-----BEGIN CERTIFICATE-----") {
        let cert = CertificateDer::from_pem_slice(&bytes).map_err(|e| format!("{path}: {e}"))?;
        return Ok((
            "certificate".into(),
            pin_of_certificate(&cert).map_err(|e| e.to_string())?,
        ));
    }
    if text.contains("-----BEGIN PUBLIC KEY-----") {
        let spki =
            SubjectPublicKeyInfoDer::from_pem_slice(&bytes).map_err(|e| format!("{path}: {e}"))?;
        return Ok(("public key".into(), pin_of_spki(&spki)));
    }
    if text.contains("PRIVATE KEY-----") {
        let key = rcgen::KeyPair::from_pem(&text).map_err(|e| format!("{path}: {e}"))?;
        return Ok((
            "private key".into(),
            pin_of_spki(&key.subject_public_key_info()),
        ));
    }
    // Otherwise: a DER certificate.
    Ok((
        "certificate (DER)".into(),
        pin_of_certificate(&bytes).map_err(|e| format!("{path}: {e}"))?,
    ))
}

fn main() -> ExitCode {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: pin FILE... (certificate, public key or private key; PEM or DER)");
        return ExitCode::from(2);
    }
    let mut failed = false;
    for f in &files {
        match pin_of_file(f) {
            Ok((kind, pin)) => println!("{}  {f} ({kind})", pin_to_string(&pin)),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
