//! `meshd pin`: the pin (`sha256/` + base64 of the SubjectPublicKeyInfo's SHA-256) of a
//! certificate, public key or private key file, PEM or DER, for pin sets
//! (`docs/runbooks/pin-rotation.md`).

use mesh_platform::pinning::{pin_of_certificate, pin_of_spki};
use rcgen::PublicKeyData as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer};

/// What the file held, and its pin.
pub(crate) fn pin_of_file(path: &std::path::Path) -> Result<(&'static str, [u8; 32]), String> {
    let name = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("{name}: {e}"))?;
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("-----BEGIN CERTIFICATE-----") {
        let cert = CertificateDer::from_pem_slice(&bytes).map_err(|e| format!("{name}: {e}"))?;
        return Ok((
            "certificate",
            pin_of_certificate(&cert).map_err(|e| format!("{name}: {e}"))?,
        ));
    }
    if text.contains("-----BEGIN PUBLIC KEY-----") {
        let spki =
            SubjectPublicKeyInfoDer::from_pem_slice(&bytes).map_err(|e| format!("{name}: {e}"))?;
        return Ok(("public key", pin_of_spki(&spki)));
    }
    if text.contains("PRIVATE KEY-----") {
        let key = rcgen::KeyPair::from_pem(&text).map_err(|e| format!("{name}: {e}"))?;
        return Ok(("private key", pin_of_spki(&key.subject_public_key_info())));
    }
    Ok((
        "certificate (DER)",
        pin_of_certificate(&bytes).map_err(|e| format!("{name}: {e}"))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_key_gives_the_same_pin_in_every_form() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["mesh.example.org".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let pem = pin_of_file(&write("c.pem", cert.pem().as_bytes())).unwrap();
        let der = pin_of_file(&write("c.der", cert.der())).unwrap();
        let private = pin_of_file(&write("k.pem", key.serialize_pem().as_bytes())).unwrap();
        let public = pin_of_file(&write("p.pem", key.public_key_pem().as_bytes())).unwrap();
        assert_eq!(pem.0, "certificate");
        assert_eq!(der.0, "certificate (DER)");
        assert_eq!(private.0, "private key");
        assert_eq!(public.0, "public key");
        assert!(pem.1 == der.1 && der.1 == private.1 && private.1 == public.1);
        let other = rcgen::KeyPair::generate().unwrap();
        let other = pin_of_file(&write("o.pem", other.public_key_pem().as_bytes())).unwrap();
        assert_ne!(other.1, pem.1);
        assert!(pin_of_file(&write("junk", b"not a key")).is_err());
        assert!(pin_of_file(&dir.path().join("missing")).is_err());
    }
}
