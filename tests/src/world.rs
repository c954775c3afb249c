//! The usual starting point of a tunnel test: a gateway, a provider it admits, and a backend
//! published under one name.

use crate::backend::Backend;
use crate::gateway::{GatewayOptions, TestGateway};
use crate::provider::TestProvider;

/// A running gateway → provider → backend chain.
#[derive(Debug)]
pub struct Published {
    pub gw: TestGateway,
    pub provider: TestProvider,
    pub backend: Backend,
}

/// Starts a gateway with `options` (plus the new provider on its allowlist), a backend, and a
/// provider that publishes the backend as `name`; returns once the gateway confirmed the name.
pub async fn publish(mut options: GatewayOptions, name: &str) -> Published {
    let id = TestProvider::identity();
    options.allow.push(id.peer_id());
    let gw = TestGateway::start(options).await;
    let backend = Backend::start().await;
    let provider = TestProvider::start(id, &gw);
    let url = provider
        .register(name, backend.addr)
        .await
        .expect("register");
    assert_eq!(url, gw.url(name, ""));
    Published {
        gw,
        provider,
        backend,
    }
}
