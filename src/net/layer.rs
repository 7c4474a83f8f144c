//! The security layer every connection goes through: TLS when it is configured (feature
//! `tls`), nothing otherwise. One type either way, so the event loop never asks which build it
//! is in.

use std::io;

use mio::net::TcpStream;

use crate::config::Config;
use crate::net::http::Response;
use crate::net::stream::Stream;

/// TLS on or off.
pub struct Layer {
    #[cfg(feature = "tls")]
    tls: Option<crate::net::tls::Tls>,
}

impl Layer {
    /// The layer `cfg` asks for. A certificate that does not load is a configuration mistake.
    pub fn new(cfg: &Config) -> Result<Layer, String> {
        #[cfg(feature = "tls")]
        return Ok(Layer {
            tls: crate::net::tls::Tls::from_config(cfg)?,
        });
        #[cfg(not(feature = "tls"))]
        {
            let _ = cfg;
            Ok(Layer {})
        }
    }

    /// True when serving HTTPS.
    pub fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return true;
        }
        false
    }

    /// The SHA-256 fingerprint of the certificate served, when serving HTTPS.
    pub fn fingerprint(&self) -> Option<&str> {
        #[cfg(feature = "tls")]
        if let Some(t) = &self.tls {
            return Some(&t.fingerprint);
        }
        None
    }

    /// Wraps an accepted socket: as is, or as the server side of a TLS handshake.
    pub fn wrap(&self, stream: TcpStream) -> io::Result<Stream> {
        #[cfg(feature = "tls")]
        if let Some(t) = &self.tls {
            let t = crate::net::stream::TlsStream::new(stream, t.config.clone())?;
            return Ok(Stream::Tls(Box::new(t)));
        }
        Ok(Stream::Plain(stream))
    }

    /// Adds what every response over this layer carries: HSTS with a real certificate.
    pub fn decorate(&self, resp: &mut Response) {
        #[cfg(feature = "tls")]
        if self.tls.as_ref().is_some_and(|t| t.hsts()) {
            // A year, the usual; no includeSubDomains: other names on the box are not ours.
            resp.headers.push((
                "Strict-Transport-Security",
                std::borrow::Cow::Borrowed("max-age=31536000"),
            ));
        }
        #[cfg(not(feature = "tls"))]
        let _ = resp;
    }

    /// SIGHUP: reads the certificate and key again; a pair that does not load is logged and
    /// the old one stays. Open connections keep the certificate they started with.
    pub fn reload(&mut self) {
        #[cfg(feature = "tls")]
        if let Some(t) = &mut self.tls {
            match t.reload() {
                Ok(()) => eprintln!(
                    "keepty: SIGHUP: TLS certificate reloaded, SHA-256 {}",
                    t.fingerprint
                ),
                Err(e) => eprintln!("keepty: SIGHUP: keeping the old TLS certificate: {e}"),
            }
        }
    }
}
