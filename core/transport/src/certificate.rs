//! The relay's self-signed certificate: generated on first start, kept, pinned by fingerprint.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use crate::error::TransportError;

/// The relay's certificate and key.
#[derive(Debug)]
pub struct RelayCertificate {
    /// DER certificate.
    pub cert_der: Vec<u8>,
    /// PKCS#8 DER private key.
    key_der: Vec<u8>,
    /// SHA-256 of the DER certificate: what devices pin.
    pub fingerprint: [u8; 32],
}

impl RelayCertificate {
    /// Load `relay-cert.der` and `relay-key.der` from `dir`, or generate and write them
    /// (key file mode 0600) if neither exists. A half-present pair is an error, never
    /// overwritten: devices pin this certificate.
    pub fn load_or_generate(dir: &Path, names: &[String]) -> Result<(Self, bool), TransportError> {
        let cert_path = dir.join("relay-cert.der");
        let key_path = dir.join("relay-key.der");
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let cert_der = read(&cert_path)?;
                let key_der = read(&key_path)?;
                Ok((Self::from_der(cert_der, key_der), false))
            }
            (false, false) => {
                let generated = Self::generate(names)?;
                fs::create_dir_all(dir).map_err(|source| TransportError::CertificateFile {
                    path: dir.to_path_buf(),
                    source,
                })?;
                write_private(&key_path, &generated.key_der)?;
                write_file(&cert_path, &generated.cert_der)?;
                Ok((generated, true))
            }
            (c, _) => Err(TransportError::Certificate(format!(
                "{} exists but {} does not; restore the missing file or remove both to \
                 generate a new certificate (devices would then need the new fingerprint)",
                if c {
                    cert_path.display()
                } else {
                    key_path.display()
                },
                if c {
                    key_path.display()
                } else {
                    cert_path.display()
                },
            ))),
        }
    }

    /// A fresh self-signed certificate for `names` (DNS names or IP addresses).
    pub fn generate(names: &[String]) -> Result<Self, TransportError> {
        let names = if names.is_empty() {
            vec!["homeroom-relay".to_string(), "localhost".to_string()]
        } else {
            names.to_vec()
        };
        let ck = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TransportError::Certificate(e.to_string()))?;
        Ok(Self::from_der(
            ck.cert.der().to_vec(),
            ck.signing_key.serialize_der(),
        ))
    }

    /// From DER bytes.
    pub fn from_der(cert_der: Vec<u8>, key_der: Vec<u8>) -> Self {
        let fingerprint = fingerprint_of(&cert_der);
        Self {
            cert_der,
            key_der,
            fingerprint,
        }
    }

    /// The fingerprint as lowercase hex.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint)
    }

    pub(crate) fn rustls_parts(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![CertificateDer::from(self.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
        )
    }
}

/// SHA-256 of a DER certificate.
pub fn fingerprint_of(cert_der: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(cert_der));
    out
}

/// Parse a fingerprint written as 64 hex characters (colons allowed, as browsers print them).
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], TransportError> {
    let clean: String = s
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&clean, &mut out)
        .map_err(|_| TransportError::BadFingerprint(s.chars().take(100).collect()))?;
    Ok(out)
}

fn read(path: &PathBuf) -> Result<Vec<u8>, TransportError> {
    fs::read(path).map_err(|source| TransportError::CertificateFile {
        path: path.clone(),
        source,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), TransportError> {
    let err = |source| TransportError::CertificateFile {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::File::create(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TransportError> {
    let err = |source| TransportError::CertificateFile {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}
