//! Outgoing HTTP: every client the service and its tools build (webhook deliveries, remote
//! agents, `kyc`, the load generator, the smoke runner) starts here, with TLS through rustls
//! and its `ring` crypto provider.

/// A client builder, once rustls has its process-wide crypto provider: reqwest builds none of
/// its own and refuses to build a client without one.
pub fn client() -> reqwest::ClientBuilder {
    install_crypto();
    reqwest::Client::builder()
}

/// Installs `ring` as rustls's provider for the process. A provider installed earlier, by a
/// program that embeds this library, is kept.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_client_with_tls_builds() {
        super::client()
            .https_only(true)
            .build()
            .expect("a client builds with the installed provider");
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
