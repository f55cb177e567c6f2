//! Certificate pinning against a real TLS server on 127.0.0.1 (rustls, certificates from rcgen):
//! matching pin, backup pin, wrong key, expired pin set, no pin set (= WebPKI, not "anything"),
//! tampered and older pin-set documents, and an expired certificate.

#![cfg(all(feature = "pinning", not(target_arch = "wasm32")))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a panic is a failure

use std::sync::Arc;

use mesh_crypto::{Identity, UnixMillis};
use mesh_platform::pinning::{
    PinPolicy, PinSetPayload, PinningVerifier, pin_of_certificate, pin_of_spki, sign_pin_set,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{CertificateError, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pki {
    ca: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    leaf_key: KeyPair,
}

fn ca() -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(
        DnType::CommonName,
        format!(
            "mesh test CA {}",
            Identity::generate().peer_id().fingerprint()
        ),
    );
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).unwrap();
    (cert.der().clone(), Issuer::new(p, key))
}

fn make_pki(expired: bool) -> Pki {
    let (ca, issuer) = ca();
    let leaf_key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    p.extended_key_usages
        .push(ExtendedKeyUsagePurpose::ServerAuth);
    p.use_authority_key_identifier_extension = true;
    if expired {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let leaf = p.signed_by(&leaf_key, &issuer).unwrap();
    Pki {
        ca,
        leaf: leaf.der().clone(),
        leaf_key,
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Serves one TLS connection on 127.0.0.1 and returns its port.
async fn serve(pki: &Pki) -> u16 {
    let key = PrivateKeyDer::try_from(pki.leaf_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.leaf.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        // The client may refuse us: that is the point of several tests.
        if let Ok(mut tls) = acceptor.accept(tcp).await {
            let _ = tls.write_all(b"hello").await;
            let _ = tls.shutdown().await;
        }
    });
    port
}

/// Connects with a pinning verifier trusting `root`; Ok(greeting) or the rustls error.
async fn connect(
    port: u16,
    root: &CertificateDer<'static>,
    policy: Arc<PinPolicy>,
) -> Result<Vec<u8>, rustls::Error> {
    let mut store = RootCertStore::empty();
    store.add(root.clone()).unwrap();
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
        .build()
        .unwrap();
    let verifier = PinningVerifier::new(webpki, policy);
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    match connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
    {
        Ok(mut tls) => {
            let mut buf = Vec::new();
            tls.read_to_end(&mut buf).await.unwrap();
            Ok(buf)
        }
        Err(e) => Err(e
            .get_ref()
            .and_then(|x| x.downcast_ref::<rustls::Error>())
            .cloned()
            .expect("a rustls error")),
    }
}

fn now() -> UnixMillis {
    UnixMillis(
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
    )
}

const DAY: u64 = 24 * 60 * 60 * 1000;

fn policy_with(
    signer: &Identity,
    pins: Vec<[u8; 32]>,
    sequence: u64,
    expires: UnixMillis,
) -> Arc<PinPolicy> {
    let policy = Arc::new(PinPolicy::new(signer.peer_id()));
    let doc = sign_pin_set(
        signer,
        PinSetPayload {
            sequence,
            hosts: vec!["localhost".into()],
            pins,
        },
        now(),
        expires,
    )
    .unwrap();
    policy.update(&doc, now()).unwrap();
    policy
}

fn unrelated_pin() -> [u8; 32] {
    pin_of_spki(&KeyPair::generate().unwrap().subject_public_key_info())
}

#[tokio::test]
async fn matching_primary_pin_is_accepted() {
    let pki = make_pki(false);
    let signer = Identity::generate();
    let pin = pin_of_spki(&pki.leaf_key.subject_public_key_info());
    assert_eq!(
        pin,
        pin_of_certificate(&pki.leaf).unwrap(),
        "pin from key = pin from certificate"
    );
    let policy = policy_with(
        &signer,
        vec![pin, unrelated_pin()],
        1,
        now().saturating_add(90 * DAY),
    );
    assert_eq!(
        connect(serve(&pki).await, &pki.ca, policy).await.unwrap(),
        b"hello"
    );
}

#[tokio::test]
async fn backup_pin_is_accepted() {
    let pki = make_pki(false);
    let signer = Identity::generate();
    let backup = pin_of_certificate(&pki.leaf).unwrap();
    let policy = policy_with(
        &signer,
        vec![unrelated_pin(), backup],
        1,
        now().saturating_add(90 * DAY),
    );
    assert_eq!(
        connect(serve(&pki).await, &pki.ca, policy).await.unwrap(),
        b"hello"
    );
}

#[tokio::test]
async fn wrong_key_is_refused_even_with_a_valid_certificate() {
    let pki = make_pki(false);
    let signer = Identity::generate();
    let policy = policy_with(
        &signer,
        vec![unrelated_pin(), unrelated_pin()],
        1,
        now().saturating_add(90 * DAY),
    );
    let err = connect(serve(&pki).await, &pki.ca, policy)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
    );
}

#[tokio::test]
async fn expired_pin_set_falls_back_to_webpki_as_documented() {
    let pki = make_pki(false);
    let signer = Identity::generate();
    // A set valid for one more second with the wrong pins: installed, then expired at connect.
    let policy = Arc::new(PinPolicy::new(signer.peer_id()));
    let start = now();
    let doc = sign_pin_set(
        &signer,
        PinSetPayload {
            sequence: 1,
            hosts: vec!["localhost".into()],
            pins: vec![unrelated_pin(), unrelated_pin()],
        },
        start,
        start.saturating_add(1000),
    )
    .unwrap();
    policy.update(&doc, start).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        connect(serve(&pki).await, &pki.ca, policy.clone())
            .await
            .unwrap(),
        b"hello"
    );
    assert!(policy.days_until_expiry(now()).unwrap() < 0.0);
    // WebPKI still applies after expiry: an untrusted CA is refused.
    let other = make_pki(false);
    let err = connect(serve(&pki).await, &other.ca, policy)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn no_pin_set_means_webpki_not_anything() {
    let pki = make_pki(false);
    let policy = Arc::new(PinPolicy::new(Identity::generate().peer_id()));
    assert_eq!(
        connect(serve(&pki).await, &pki.ca, policy.clone())
            .await
            .unwrap(),
        b"hello"
    );
    let stranger = make_pki(false);
    let err = connect(serve(&pki).await, &stranger.ca, policy)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn expired_certificate_is_refused_even_when_pinned() {
    let pki = make_pki(true);
    let signer = Identity::generate();
    let pin = pin_of_certificate(&pki.leaf).unwrap();
    let policy = policy_with(
        &signer,
        vec![pin, unrelated_pin()],
        1,
        now().saturating_add(90 * DAY),
    );
    let err = connect(serve(&pki).await, &pki.ca, policy)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::ExpiredContext { .. } | CertificateError::Expired
            )
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn tampered_and_older_pin_set_documents_are_refused() {
    let pki = make_pki(false);
    let signer = Identity::generate();
    let good = pin_of_certificate(&pki.leaf).unwrap();
    let policy = policy_with(
        &signer,
        vec![good, unrelated_pin()],
        5,
        now().saturating_add(90 * DAY),
    );
    // Mallory swaps her own pins into a copy of a newer document: the signature breaks.
    let evil = unrelated_pin();
    let mut doc = sign_pin_set(
        &signer,
        PinSetPayload {
            sequence: 6,
            hosts: vec!["localhost".into()],
            pins: vec![unrelated_pin(), unrelated_pin()],
        },
        now(),
        now().saturating_add(DAY),
    )
    .unwrap();
    let pins_at = doc.len() - 64 - 64;
    doc[pins_at..pins_at + 32].copy_from_slice(&evil);
    assert!(
        policy.update(&doc, now()).is_err(),
        "tampered document accepted"
    );
    let older = sign_pin_set(
        &signer,
        PinSetPayload {
            sequence: 4,
            hosts: vec!["localhost".into()],
            pins: vec![unrelated_pin(), unrelated_pin()],
        },
        now(),
        now().saturating_add(DAY),
    )
    .unwrap();
    assert!(
        policy.update(&older, now()).is_err(),
        "older document accepted"
    );
    // The original set is still in force.
    assert_eq!(policy.active_sequence(), Some(5));
    assert_eq!(
        connect(serve(&pki).await, &pki.ca, policy).await.unwrap(),
        b"hello"
    );
}
