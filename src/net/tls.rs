//! TLS configuration (feature `tls`): the certificate and key from PEM files, or a
//! self-signed pair made on first start and kept, and the rustls `ServerConfig` every new
//! connection starts from. SIGHUP builds a new one; connections already open keep theirs.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;

/// File names of the self-signed pair inside the state directory.
const CERT_FILE: &str = "tls-cert.pem";
const KEY_FILE: &str = "tls-key.pem";

/// Where the certificate comes from, resolved once at startup so a reload reads the same files.
#[derive(Clone, Debug)]
pub struct Source {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Made by keepty (`--tls-self-signed`): HSTS is not sent (see [`Tls::hsts`]).
    pub self_signed: bool,
}

/// The live TLS state of the server.
pub struct Tls {
    /// Where the certificate and key are read from (and re-read on SIGHUP).
    pub source: Source,
    /// What new connections start from.
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the leaf certificate, `AB:CD:...`, as browsers show it.
    pub fingerprint: String,
}

impl Tls {
    /// Resolves the configuration's TLS options; `Ok(None)` when TLS is off. A self-signed
    /// pair is made here on first start. Errors are configuration mistakes (exit code 2).
    pub fn from_config(cfg: &Config) -> Result<Option<Tls>, String> {
        let source = match (&cfg.tls_cert, &cfg.tls_key, cfg.tls_self_signed) {
            (Some(c), Some(k), false) => Source {
                cert: c.clone(),
                key: k.clone(),
                self_signed: false,
            },
            (None, None, true) => self_signed(cfg)?,
            _ => return Ok(None),
        };
        Tls::load(source).map(Some)
    }

    /// Reads and checks the certificate and key of `source`.
    pub fn load(source: Source) -> Result<Tls, String> {
        let (config, fingerprint) = server_config(&source.cert, &source.key)?;
        Ok(Tls {
            source,
            config,
            fingerprint,
        })
    }

    /// SIGHUP: the same files again. A broken new pair leaves the old one in use.
    pub fn reload(&mut self) -> Result<(), String> {
        let (config, fingerprint) = server_config(&self.source.cert, &self.source.key)?;
        self.config = config;
        self.fingerprint = fingerprint;
        Ok(())
    }

    /// Whether responses carry Strict-Transport-Security. Not with a self-signed
    /// certificate: HSTS makes certificate warnings impossible to click through, which would
    /// lock a phone out of a box whose certificate it was told to accept by fingerprint.
    pub fn hsts(&self) -> bool {
        !self.source.self_signed
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<(Arc<ServerConfig>, String), String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    let Some(leaf) = certs.first() else {
        return Err(format!(
            "--tls-cert {}: no certificate in the file",
            cert.display()
        ));
    };
    let fingerprint = fingerprint(leaf);
    // The key's text is never logged: only the path and rustls's description of the fault.
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    // HTTP/1.1 only: the WebSocket upgrade needs it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), fingerprint))
}

/// SHA-256 of a certificate in the colon-separated hex that browsers' certificate viewers show.
pub fn fingerprint(cert: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// The directory a self-signed pair lives in: `--tls-dir`, else `$XDG_STATE_HOME/keepty`,
/// else `~/.local/state/keepty`.
pub fn state_dir(cfg: &Config) -> Result<PathBuf, String> {
    if let Some(d) = &cfg.tls_dir {
        return Ok(d.clone());
    }
    let non_empty = |v: &str| std::env::var_os(v).filter(|s| !s.is_empty());
    if let Some(x) = non_empty("XDG_STATE_HOME") {
        return Ok(PathBuf::from(x).join("keepty"));
    }
    if let Some(h) = non_empty("HOME") {
        return Ok(PathBuf::from(h).join(".local/state/keepty"));
    }
    Err(
        "--tls-self-signed: no --tls-dir, $XDG_STATE_HOME or $HOME to keep the certificate in"
            .into(),
    )
}

/// The self-signed pair in the state directory, made now when it is not there yet.
fn self_signed(cfg: &Config) -> Result<Source, String> {
    let dir = state_dir(cfg)?;
    let source = Source {
        cert: dir.join(CERT_FILE),
        key: dir.join(KEY_FILE),
        self_signed: true,
    };
    if source.cert.exists() && source.key.exists() {
        return Ok(source);
    }
    let names = box_names(cfg);
    let made = rcgen::generate_simple_self_signed(names.clone())
        .map_err(|e| format!("--tls-self-signed: cannot make a certificate: {e}"))?;
    create_private_dir(&dir)
        .map_err(|e| format!("--tls-self-signed: cannot create {}: {e}", dir.display()))?;
    write_private(&source.key, made.signing_key.serialize_pem().as_bytes()).map_err(|e| {
        format!(
            "--tls-self-signed: cannot write {}: {e}",
            source.key.display()
        )
    })?;
    fs::write(&source.cert, made.cert.pem()).map_err(|e| {
        format!(
            "--tls-self-signed: cannot write {}: {e}",
            source.cert.display()
        )
    })?;
    eprintln!(
        "keepty: made a self-signed TLS certificate for {} in {}",
        names.join(", "),
        dir.display()
    );
    Ok(source)
}

/// The names a browser may use for this box: its hostname (and `.local` for mDNS), the
/// listen address or, on a wildcard listen, every interface address, loopback, and the
/// `--allow-host` names.
fn box_names(cfg: &Config) -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    if let Ok(h) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() && h != "localhost" {
            names.push(h.to_string());
            if !h.contains('.') {
                names.push(format!("{h}.local"));
            }
        }
    }
    let mut ips: Vec<IpAddr> = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ];
    let listen = cfg.listen.ip();
    if listen.is_unspecified() {
        for ip in crate::net::interfaces::addresses(listen.is_ipv6()) {
            match ip {
                IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => {}
                ip => ips.push(ip),
            }
        }
    } else {
        ips.push(listen);
    }
    for ip in ips {
        let s = ip.to_string();
        if !names.contains(&s) {
            names.push(s);
        }
    }
    for h in &cfg.allow_hosts {
        // An --allow-host may carry a port; a certificate name does not.
        let name = match h.rsplit_once(':') {
            Some((n, p)) if !n.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => n,
            _ => h.as_str(),
        };
        let name = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}
