//! Hearth's own certificate authority and the certificates it signs. The first start makes a
//! CA (`DATA_DIR/tls/ca.pem`, key 0600) and a server certificate for this machine's names;
//! clients trust the CA file (`hearth connect` prints how). An admin may bring their own
//! certificate instead. Crypto is rustls + ring only: aws-lc is never linked.

use anyhow::{anyhow, Context};
use hearth_model::cluster::SERVER_NAME;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
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

/// Loads the CA, making it on first use.
fn load_or_make_ca(files: &TlsFiles) -> anyhow::Result<(KeyPair, rcgen::Certificate)> {
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
    Ok((ca_key, ca))
}

/// Makes the CA on first use, then the server certificate for `names` when it is missing or
/// was made for other names. Returns the CA certificate in PEM.
pub fn ensure_ca_and_server_cert(files: &TlsFiles, names: &[String]) -> anyhow::Result<String> {
    let (ca_key, ca) = load_or_make_ca(files)?;
    ensure_leaf(
        &ca,
        &ca_key,
        names,
        (
            files.server_cert(),
            files.server_key(),
            files.server_names(),
        ),
        None,
    )?;
    std::fs::read_to_string(files.ca_cert()).context("reading the CA certificate")
}

/// Makes a certificate signed by the CA at `paths` (cert, key, names) unless one for the
/// same names is there.
fn ensure_leaf(
    ca: &rcgen::Certificate,
    ca_key: &KeyPair,
    names: &[String],
    (cert_path, key_path, names_path): (PathBuf, PathBuf, PathBuf),
    usage: Option<ExtendedKeyUsagePurpose>,
) -> anyhow::Result<()> {
    let wanted = names.join("\n");
    let current = std::fs::read_to_string(&names_path).unwrap_or_default();
    if current != wanted || !cert_path.exists() || !key_path.exists() {
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().map_or("hearth", |n| n));
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages = usage.into_iter().collect();
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, ca, ca_key)?;
        write_private(&key_path, &key.serialize_pem(), 0o600)?;
        write_private(&cert_path, &cert.pem(), 0o644)?;
        write_private(&names_path, &wanted, 0o644)?;
    }
    Ok(())
}

/// The cluster port's TLS: its own server certificate (for [`SERVER_NAME`], server use only)
/// and the CA that signs and checks nodes' certificates.
pub struct ClusterTls {
    /// Accepts connections with a certificate from Hearth's CA, or none (only to join).
    pub server: Arc<rustls::ServerConfig>,
    /// The SHA-256 of the CA certificate's DER: what agents pin.
    pub ca_sha256: String,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl ClusterTls {
    /// Makes (or loads) the CA and the cluster certificate under DATA_DIR/tls.
    pub fn load(files: &TlsFiles) -> anyhow::Result<ClusterTls> {
        let (ca_key, ca) = load_or_make_ca(files)?;
        let mut names = vec![SERVER_NAME.to_string()];
        names.extend(machine_names(&[]));
        ensure_leaf(
            &ca,
            &ca_key,
            &names,
            (
                files.dir.join("cluster.pem"),
                files.dir.join("cluster.key"),
                files.dir.join("cluster.names"),
            ),
            Some(ExtendedKeyUsagePurpose::ServerAuth),
        )?;
        let ca_der = CertificateDer::from_pem_file(files.ca_cert())
            .with_context(|| format!("reading {}", files.ca_cert().display()))?;
        let ca_sha256 = hex::encode(Sha256::digest(ca_der.as_ref()));
        let mut chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(files.dir.join("cluster.pem"))
                .context("reading the cluster certificate")?
                .collect::<Result<_, _>>()
                .context("parsing the cluster certificate")?;
        // The CA goes with the chain: a new agent has only its hash to check it against.
        chain.push(ca_der.clone());
        let key = PrivateKeyDer::from_pem_file(files.dir.join("cluster.key"))
            .context("reading the cluster key")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca_der)
            .context("the CA certificate is not usable")?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .context("building the node certificate check")?;
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .context("the cluster certificate and key do not go together")?;
        Ok(ClusterTls {
            server: Arc::new(server),
            ca_sha256,
            ca,
            ca_key,
        })
    }

    /// A client certificate for a node's public key (the raw uncompressed P-256 point), for
    /// client use only, named after the node: its PEM and its SHA-256.
    pub fn sign_node(&self, public_key: &[u8], name: &str) -> anyhow::Result<(String, String)> {
        // A well-formed point is all that can be checked here; the node proves it holds
        // the private key at every mutual-TLS handshake, where a wrong key simply fails.
        if public_key.len() != 65 || public_key[0] != 4 {
            return Err(anyhow!(
                "the public key is not an uncompressed P-256 point (65 bytes starting with 04)"
            ));
        }
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "hearth node");
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // A random serial: two nodes with the same name never get the same certificate.
        let mut serial = [0u8; 16];
        getrandom::getrandom(&mut serial).map_err(|e| anyhow!("random serial: {e}"))?;
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = params.signed_by(&RawP256(public_key.to_vec()), &self.ca, &self.ca_key)?;
        Ok((cert.pem(), cert_sha256(cert.der())))
    }
}

/// A node's public key as the agent sent it.
struct RawP256(Vec<u8>);

impl rcgen::PublicKeyData for RawP256 {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// The SHA-256 (hex) of a certificate's DER: how nodes are known.
pub fn cert_sha256(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
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

    #[test]
    fn the_cluster_port_keeps_its_ca_and_signs_only_p256_points() {
        let dir = std::env::temp_dir().join(format!("hearth-cluster-tls-{}", std::process::id()));
        let files = TlsFiles::new(&dir);
        let first = ClusterTls::load(&files).expect("first");
        let again = ClusterTls::load(&files).expect("again");
        assert_eq!(
            first.ca_sha256, again.ca_sha256,
            "agents' pins survive restarts"
        );
        let key = KeyPair::generate().expect("key");
        let (pem, sha) = first.sign_node(key.public_key_raw(), "n1").expect("signs");
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem");
        assert_eq!(cert_sha256(der.as_ref()), sha);
        assert!(first.sign_node(&[4u8; 10], "n1").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
