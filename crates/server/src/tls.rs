//! Hearth's own certificate authority and the certificates it signs. The first start makes a
//! CA (`DATA_DIR/tls/ca.pem`, key 0600) and a server certificate for this machine's names;
//! clients trust the CA file (`hearth connect` prints how). An admin may bring their own
//! certificate instead. Crypto is rustls + ring only: aws-lc is never linked.

use anyhow::{anyhow, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the CA and the server certificate live.
pub struct TlsFiles {
    pub dir: PathBuf,
}

impl TlsFiles {
    pub fn new(data_dir: &Path) -> TlsFiles {
        TlsFiles {
            dir: data_dir.join("tls"),
        }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    /// The names the server certificate was made for, one a line: a change remakes it.
    fn server_names(&self) -> PathBuf {
        self.dir.join("server.names")
    }
}

fn write_private(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("securing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The CA's parameters. Always the same, so a CA reloaded from its key signs certificates
/// whose issuer (name and key identifier) matches the `ca.pem` clients already trust.
fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Hearth CA");
    dn.push(DnType::OrganizationName, "Hearth");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(params)
}

/// Makes the CA on first use, then the server certificate for `names` when it is missing or
/// was made for other names. Returns the CA certificate in PEM.
pub fn ensure_ca_and_server_cert(files: &TlsFiles, names: &[String]) -> anyhow::Result<String> {
    std::fs::create_dir_all(&files.dir)
        .with_context(|| format!("creating {}", files.dir.display()))?;
    std::fs::set_permissions(&files.dir, std::fs::Permissions::from_mode(0o700))?;
    let ca_key = match std::fs::read_to_string(files.ca_key()) {
        Ok(pem) => KeyPair::from_pem(&pem).context("reading the CA key")?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyPair::generate()?;
            let cert = ca_params()?.self_signed(&key)?;
            write_private(&files.ca_key(), &key.serialize_pem(), 0o600)?;
            write_private(&files.ca_cert(), &cert.pem(), 0o644)?;
            key
        }
        Err(e) => return Err(e).context("reading the CA key"),
    };
    let ca = ca_params()?.self_signed(&ca_key)?;
    let wanted = names.join("\n");
    let current = std::fs::read_to_string(files.server_names()).unwrap_or_default();
    if current != wanted || !files.server_cert().exists() || !files.server_key().exists() {
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().map_or("hearth", |n| n));
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        write_private(&files.server_key(), &key.serialize_pem(), 0o600)?;
        write_private(&files.server_cert(), &cert.pem(), 0o644)?;
        write_private(&files.server_names(), &wanted, 0o644)?;
    }
    std::fs::read_to_string(files.ca_cert()).context("reading the CA certificate")
}

/// The names a certificate for this machine covers: localhost, 127.0.0.1, the hostname, and
/// whatever the admin added.
pub fn machine_names(extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(h.trim().to_string());
    }
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| !n.is_empty() && seen.insert(n.clone()));
    names
}

/// A rustls server config (HTTP/2 only, as gRPC needs) from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing the certificate {}", cert.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{} holds no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not go together")?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_and_signs_a_loadable_server_cert() {
        let dir = std::env::temp_dir().join(format!("hearth-tls-{}", std::process::id()));
        let files = TlsFiles::new(&dir);
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let ca1 = ensure_ca_and_server_cert(&files, &names).expect("first");
        let mode = std::fs::metadata(files.ca_key())
            .expect("key")
            .permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
        let ca2 = ensure_ca_and_server_cert(&files, &["example.org".to_string()]).expect("again");
        assert_eq!(ca1, ca2, "the CA survives a change of names");
        server_config(&files.server_cert(), &files.server_key()).expect("loads");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
