//! `meshd run`'s settings: defaults, then the TOML file, then `MESHD_*` environment variables,
//! then command-line flags (each overrides the one before).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mesh_crypto::PeerId;
use serde::Deserialize;

/// Default public HTTP listener: signaling, `/health`, `/metrics`.
pub(crate) const DEFAULT_LISTEN: &str = "0.0.0.0:7700";
/// The config file looked for in the data directory when none is named.
pub(crate) const CONFIG_FILE: &str = "meshd.toml";

/// The config file. Every key is optional; unknown keys are an error (a typo must not be
/// silently ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    /// Public HTTP listener (`host:port`), or `"off"` for a node only reachable through
    /// others.
    pub listen: Option<String>,
    /// The signaling URL peers and browsers dial (default: from `listen`).
    pub public_url: Option<String>,
    /// Peers to join through: `PEER_ID@URL`, or a bare URL (its peer id is fetched from
    /// `/mesh/v1/id`, trusted on first use).
    pub bootstrap: Option<Vec<String>>,
    /// Log filter (`tracing` directives, as `RUST_LOG`): `info`, `mesh_dht=debug,info`, ...
    pub log: Option<String>,
    /// Where `/metrics` is served: `"public"` (on the public listener, the default), `"off"`,
    /// or `host:port` for a listener of its own (a private interface, for instance).
    pub metrics: Option<String>,
    /// Whether the public listener serves the web page (a browser node) at `/` (default
    /// true).
    pub web: Option<bool>,
    /// WebRTC settings.
    pub webrtc: Option<WebRtcSection>,
    /// Blob store limits.
    pub blobs: Option<BlobsSection>,
    /// DHT storage limits.
    pub dht: Option<DhtSection>,
    /// A signed pin-set document to serve at `/mesh/v1/pin-set` (and watch for expiry).
    pub pin_set: Option<PathBuf>,
    /// The key that must have signed `pin_set` (a peer id).
    pub pin_signer: Option<String>,
}

/// `[webrtc]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebRtcSection {
    /// Local UDP addresses to gather ICE candidates on (default `0.0.0.0:0`).
    pub udp: Option<Vec<String>>,
    /// STUN/TURN servers.
    pub ice_servers: Option<Vec<String>>,
    /// Whether WebRTC offers relayed by linked peers are taken (default true). With false, a
    /// node without a public endpoint links only to peers it dials itself, and everything
    /// else reaches it through the mesh.
    pub accept_relayed: Option<bool>,
}

/// `[blobs]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BlobsSection {
    /// Most bytes stored for all owners together.
    pub total_quota: Option<u64>,
    /// Most bytes stored for one owner.
    pub owner_quota: Option<u64>,
    /// Largest blob accepted.
    pub max_blob_size: Option<u64>,
}

/// `[dht]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DhtSection {
    /// Most bytes of records held in all.
    pub total_bytes: Option<u64>,
    /// Most bytes of records held for one peer.
    pub per_peer_bytes: Option<u64>,
}

/// Overrides from the command line or the environment (clap reads both).
#[derive(Debug, Default, Clone, clap::Args)]
pub(crate) struct RunArgs {
    /// Public HTTP listener (`host:port`), or `off`.
    #[arg(long, env = "MESHD_LISTEN")]
    pub listen: Option<String>,
    /// The signaling URL peers dial (default: `http://` + the listen address).
    #[arg(long, env = "MESHD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Where `/metrics` is served: `public`, `off`, or `host:port`.
    #[arg(long, env = "MESHD_METRICS")]
    pub metrics: Option<String>,
    /// Whether the public listener serves the web page at `/` (`true` or `false`).
    #[arg(long, env = "MESHD_WEB")]
    pub web: Option<bool>,
    /// Peer to join through: `PEER_ID@URL` or `URL`; repeat, or comma-separate in the
    /// environment.
    #[arg(long, env = "MESHD_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// Log filter, as `RUST_LOG` (`info`, `mesh_gossip=debug,info`, ...); default: `RUST_LOG`,
    /// else `info`.
    #[arg(long, env = "MESHD_LOG")]
    pub log: Option<String>,
}

/// Where to bootstrap from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bootstrap {
    /// A peer whose id we know.
    Known(PeerId, String),
    /// Only a URL: the id is asked for.
    Url(String),
}

impl Bootstrap {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some((id, url)) = text.split_once('@') {
            let peer: PeerId = id
                .parse()
                .map_err(|e| format!("bootstrap {text:?}: bad peer id: {e}"))?;
            check_url(url)?;
            return Ok(Self::Known(peer, url.to_string()));
        }
        check_url(text)?;
        Ok(Self::Url(text.to_string()))
    }
}

/// Where `/metrics` is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetricsAt {
    /// On the public listener.
    Public,
    /// Not at all.
    Off,
    /// On a listener of its own.
    Own(SocketAddr),
}

fn parse_metrics(text: &str) -> Result<MetricsAt, String> {
    match text {
        "public" => Ok(MetricsAt::Public),
        "off" => Ok(MetricsAt::Off),
        addr => addr
            .parse()
            .map(MetricsAt::Own)
            .map_err(|e| format!("metrics {addr:?}: {e} (public, off or host:port)")),
    }
}

fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("http://") && url.len() > "http://".len() {
        Ok(())
    } else {
        Err(format!(
            "{url:?} is not a plain http:// URL (put a TLS terminator in front, and give its http address here)"
        ))
    }
}

/// Everything `meshd run` needs, merged and checked.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub data_dir: PathBuf,
    pub listen: Option<SocketAddr>,
    pub public_url: Option<String>,
    pub bootstrap: Vec<Bootstrap>,
    pub log: String,
    pub metrics: MetricsAt,
    pub web: bool,
    pub udp: Vec<String>,
    pub ice_servers: Vec<String>,
    pub accept_relayed: bool,
    pub blobs: mesh_blob::store::BlobConfig,
    pub dht: mesh_dht::node::DhtConfig,
    pub pin_set: Option<(PathBuf, PeerId)>,
}

/// Reads the config file: `explicit` must exist; otherwise `DATA_DIR/meshd.toml` is read if it
/// exists.
pub(crate) fn read_file(data_dir: &Path, explicit: Option<&Path>) -> Result<FileConfig, String> {
    let path = if let Some(p) = explicit {
        p.to_path_buf()
    } else {
        let p = data_dir.join(CONFIG_FILE);
        if !p.exists() {
            return Ok(FileConfig::default());
        }
        p
    };
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("config {}: {e}", path.display()))?;
    let mut file = parse_file(&text).map_err(|e| format!("config {}: {e}", path.display()))?;
    // A relative pin-set path is relative to the config file.
    if let (Some(pins), Some(dir)) = (file.pin_set.as_mut(), path.parent())
        && pins.is_relative()
    {
        *pins = dir.join(&*pins);
    }
    Ok(file)
}

pub(crate) fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

fn parse_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    if text == "off" {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e| format!("listen {text:?}: {e}"))
}

/// Merges defaults, the file and the overrides, and checks the result.
pub(crate) fn merge(
    data_dir: PathBuf,
    file: FileConfig,
    args: RunArgs,
) -> Result<Settings, String> {
    let listen = parse_listen(
        args.listen
            .as_deref()
            .or(file.listen.as_deref())
            .unwrap_or(DEFAULT_LISTEN),
    )?;
    let public_url = args.public_url.or(file.public_url);
    if let Some(url) = &public_url {
        // Browsers behind a TLS terminator dial https; native peers need http.
        if !url.starts_with("https://") {
            check_url(url)?;
        }
    }
    let metrics = parse_metrics(
        args.metrics
            .as_deref()
            .or(file.metrics.as_deref())
            .unwrap_or("public"),
    )?;
    if metrics == MetricsAt::Public && listen.is_none() {
        tracing::debug!("no public listener: /metrics is not served");
    }
    let bootstrap_text = if args.bootstrap.is_empty() {
        file.bootstrap.unwrap_or_default()
    } else {
        args.bootstrap
    };
    let bootstrap = bootstrap_text
        .iter()
        .filter(|t| !t.trim().is_empty())
        .map(|t| Bootstrap::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let webrtc = file.webrtc.unwrap_or_default();
    let mut blobs = mesh_blob::store::BlobConfig::default();
    if let Some(b) = file.blobs {
        blobs.total_quota = b.total_quota.unwrap_or(blobs.total_quota);
        blobs.owner_quota = b.owner_quota.unwrap_or(blobs.owner_quota);
        blobs.max_blob_size = b.max_blob_size.unwrap_or(blobs.max_blob_size);
    }
    blobs.validate().map_err(|e| format!("[blobs]: {e}"))?;
    if blobs.total_quota == 0 || blobs.owner_quota == 0 || blobs.max_blob_size == 0 {
        return Err("[blobs]: quotas and max_blob_size must be above zero".into());
    }
    let mut dht = mesh_dht::node::DhtConfig::default();
    if let Some(d) = file.dht {
        if let Some(max) = d.total_bytes {
            dht.store.total_bytes =
                usize::try_from(max).map_err(|_| "[dht] total_bytes too large")?;
        }
        if let Some(max) = d.per_peer_bytes {
            dht.store.per_peer_bytes =
                usize::try_from(max).map_err(|_| "[dht] per_peer_bytes too large")?;
        }
        if dht.store.total_bytes == 0 || dht.store.per_peer_bytes == 0 {
            return Err("[dht]: quotas must be above zero".into());
        }
    }
    let pin_set = match (file.pin_set, file.pin_signer) {
        (None, None) => None,
        (Some(path), Some(signer)) => Some((
            path,
            signer
                .parse()
                .map_err(|e| format!("pin_signer: bad peer id: {e}"))?,
        )),
        _ => return Err("pin_set and pin_signer go together".into()),
    };
    Ok(Settings {
        data_dir,
        listen,
        public_url,
        bootstrap,
        log: args
            .log
            .or(file.log)
            .or_else(|| std::env::var("RUST_LOG").ok())
            .unwrap_or_else(|| "info".into()),
        metrics,
        web: args.web.or(file.web).unwrap_or(true),
        udp: webrtc.udp.unwrap_or_else(|| vec!["0.0.0.0:0".into()]),
        ice_servers: webrtc.ice_servers.unwrap_or_default(),
        accept_relayed: webrtc.accept_relayed.unwrap_or(true),
        blobs,
        dht,
        pin_set,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        mesh_crypto::Identity::from_seed(&[7; 32]).peer_id()
    }

    #[test]
    fn defaults_then_file_then_flags() {
        let file = parse_file(
            "listen = \"127.0.0.1:9000\"\nbootstrap = [\"http://10.0.0.1:7700/mesh/v1/signal\"]\nlog = \"debug\"\n[blobs]\ntotal_quota = 1000000000\n",
        )
        .unwrap();
        let s = merge(PathBuf::from("d"), file, RunArgs::default()).unwrap();
        assert_eq!(s.listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(s.log, "debug");
        assert_eq!(s.blobs.total_quota, 1_000_000_000);
        assert_eq!(
            s.bootstrap,
            vec![Bootstrap::Url("http://10.0.0.1:7700/mesh/v1/signal".into())]
        );
        assert_eq!(s.metrics, MetricsAt::Public);
        assert!(s.web, "the web page is served by default");
        let args = RunArgs {
            listen: Some("off".into()),
            log: Some("warn".into()),
            bootstrap: vec![format!("{}@http://h:1/mesh/v1/signal", peer())],
            ..RunArgs::default()
        };
        let file = parse_file(
            "listen = \"127.0.0.1:9000\"\nlog = \"debug\"\nmetrics = \"127.0.0.1:9100\"\nweb = false",
        )
        .unwrap();
        let s = merge(PathBuf::from("d"), file, args).unwrap();
        assert!(!s.web);
        assert_eq!(s.listen, None);
        assert_eq!(s.log, "warn");
        assert_eq!(s.metrics, MetricsAt::Own("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(
            s.bootstrap,
            vec![Bootstrap::Known(peer(), "http://h:1/mesh/v1/signal".into())]
        );
    }

    #[test]
    fn refuses_what_is_wrong() {
        assert!(
            parse_file("lisen = \"x\"")
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(parse_file("listen = 7").is_err());
        let bad = |args: RunArgs| merge(PathBuf::from("d"), FileConfig::default(), args);
        assert!(
            bad(RunArgs {
                metrics: Some("everywhere".into()),
                ..RunArgs::default()
            })
            .unwrap_err()
            .contains("public, off or host:port")
        );
        assert!(
            bad(RunArgs {
                listen: Some("nowhere".into()),
                ..RunArgs::default()
            })
            .is_err()
        );
        for b in ["https://x/y", "ftp://x", "zzz@http://x/y", "http://"] {
            assert!(
                bad(RunArgs {
                    bootstrap: vec![b.into()],
                    ..RunArgs::default()
                })
                .is_err(),
                "{b}"
            );
        }
        let file = parse_file("pin_set = \"p\"").unwrap();
        assert!(merge(PathBuf::from("d"), file, RunArgs::default()).is_err());
        let file = parse_file("[blobs]\nowner_quota = 0").unwrap();
        assert!(merge(PathBuf::from("d"), file, RunArgs::default()).is_err());
    }
}
