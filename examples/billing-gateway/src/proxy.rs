//! The request path: authenticate, authorise, lease, forward, count.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use vault_client::{Client, Error as VaultError, ExposeSecret, VerifiedKey};

use crate::answer::{self, Answer, error};
use crate::config::{Config, ConfigError, Provider};
use crate::keys::{self, may_proxy};
use crate::upstream;
use crate::usage::{UsageEvent, UsageLedger};

/// Customer connections served at once.
const MAX_CONNECTIONS: usize = 4096;

/// Longest wait for a customer request's body.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Largest customer request body forwarded.
const MAX_BODY: usize = 1 << 20;

/// Why the gateway did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The vault client could not be built (certificates, endpoints).
    #[error("vault client: {0}")]
    Vault(#[from] VaultError),
    /// A file or socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An upstream's TLS trust could not be loaded.
    #[error("providers.{provider}.ca: {source}")]
    UpstreamTls {
        /// The provider.
        provider: String,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
}

struct Route {
    provider: Provider,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// A configured gateway.
pub struct Gateway {
    vault: Client,
    usage: UsageLedger,
    routes: BTreeMap<String, Route>,
}

impl Gateway {
    /// Builds the gateway from `config`: the vault client, the routes, the ledger.
    /// Must be called within a Tokio runtime.
    pub fn new(config: &Config) -> Result<Self, GatewayError> {
        let mut builder = Client::builder()
            .ca_cert(&config.vault.ca)
            .client_cert(&config.vault.cert, &config.vault.key)
            .lease_ttl(config.vault.lease_ttl)
            .api_key_cache(config.vault.api_key_cache)
            .max_attempts(2);
        for endpoint in &config.vault.endpoints {
            builder = builder.endpoint(endpoint.clone());
        }
        let mut routes = BTreeMap::new();
        for (name, provider) in &config.providers {
            let tls = upstream::tls_for(provider).map_err(|source| GatewayError::UpstreamTls {
                provider: name.clone(),
                source,
            })?;
            routes.insert(
                name.clone(),
                Route {
                    provider: provider.clone(),
                    tls,
                },
            );
        }
        Ok(Self {
            vault: builder.build()?,
            usage: UsageLedger::open(&config.usage_log).map_err(|source| GatewayError::Io {
                what: format!("opening the usage log {}", config.usage_log.display()),
                source,
            })?,
            routes,
        })
    }

    /// Serves customers on `listener` until the task is dropped: at most
    /// 4096 connections at once, each sending its headers within 10 s.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let gateway = Arc::clone(&self);
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |request| {
                    let gateway = Arc::clone(&gateway);
                    async move { Ok::<_, Infallible>(gateway.handle(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    }

    /// Binds `addr` and serves; returns the bound address and the serving task.
    pub async fn bind(
        self,
        addr: SocketAddr,
    ) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), GatewayError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| GatewayError::Io {
                what: format!("listening on {addr}"),
                source,
            })?;
        let bound = listener.local_addr().map_err(|source| GatewayError::Io {
            what: "reading the bound address".into(),
            source,
        })?;
        Ok((bound, tokio::spawn(Arc::new(self).serve(listener))))
    }

    async fn handle(&self, request: Request<Incoming>) -> Answer {
        let started = Instant::now();
        let path = request.uri().path().to_owned();
        let Some(rest) = path.strip_prefix("/v1/proxy/") else {
            return error(
                StatusCode::NOT_FOUND,
                "not found: use POST /v1/proxy/{provider}/…",
            );
        };
        let (provider, upstream_path) = rest.split_once('/').unwrap_or((rest, ""));
        let Some(route) = self.routes.get(provider) else {
            return error(StatusCode::NOT_FOUND, "unknown provider");
        };
        if request.method() != Method::POST {
            return error(StatusCode::METHOD_NOT_ALLOWED, "only POST is proxied");
        }
        let mut owner = None;
        let response = self
            .admit(request, provider, route, upstream_path, &mut owner)
            .await;
        // Provider, the verified key's public id and owner, status and time only:
        // never a key or a body.
        tracing::info!(
            provider,
            tenant = owner.as_ref().map(|o| display(&o.tenant)),
            env = owner.as_ref().map(|o| o.environment.as_str()),
            key_id = owner.as_ref().map(|o| display(&o.key_id)),
            status = response.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "answered"
        );
        response
    }

    /// Authenticates and authorises the request, then forwards it. `owner` is set
    /// once vaultd has verified the request's key.
    async fn admit(
        &self,
        request: Request<Incoming>,
        provider: &str,
        route: &Route,
        upstream_path: &str,
        owner: &mut Option<VerifiedKey>,
    ) -> Answer {
        // Checked here first: a malformed key costs vaultd nothing.
        let key = match keys::presented(request.headers()) {
            Ok(key) => key,
            Err(problem) => return error(StatusCode::UNAUTHORIZED, problem.message()),
        };
        let idempotency_key = match request
            .headers()
            .get("idempotency-key")
            .map(HeaderValue::to_str)
        {
            None => None,
            Some(Ok(key)) if (1..=128).contains(&key.len()) => Some(key.to_owned()),
            Some(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Idempotency-Key must be 1-128 visible ASCII characters",
                );
            }
        };
        // vaultd judges the key and charges its limits and quota one unit; the scope
        // is judged here, on the scopes vaultd returns, because `proxy:*` is the
        // gateway's wildcard and vaultd matches scopes exactly. (So a request refused
        // for its scope has been counted against the key's limits.)
        let verified = match self
            .vault
            .verify_api_key(&key.text, key.environment, None, 1)
            .await
        {
            Ok(verified) => owner.insert(verified),
            Err(e) => return answer::key_refused(&e),
        };
        drop(key);
        if !may_proxy(&verified.scopes, provider) {
            return error(
                StatusCode::FORBIDDEN,
                "this API key's scopes do not include this provider",
            );
        }
        self.forward(
            request,
            verified,
            provider,
            route,
            upstream_path,
            idempotency_key.as_deref(),
        )
        .await
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        owner: &VerifiedKey,
        provider: &str,
        route: &Route,
        upstream_path: &str,
        idempotency_key: Option<&str>,
    ) -> Answer {
        let env = owner.environment.as_str();
        let (parts, body) = request.into_parts();
        // A slow sender must not hold a connection slot indefinitely.
        let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await;
        let body = match read {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(_)) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the request body exceeds 1 MiB",
                );
            }
            Err(_) => {
                return error(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive within 30 s",
                );
            }
        };
        // Lease before anything goes upstream: no key, no request.
        let secret = format!("byok/{provider}");
        let lease = match self
            .vault
            .lease(&owner.tenant, owner.environment, &secret)
            .await
        {
            Ok(lease) => lease,
            Err(e) => return answer::lease_failure(&e, provider, env),
        };
        let Some(uri) = upstream_uri(&route.provider.upstream, upstream_path, parts.uri.query())
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "the request path is not valid upstream",
            );
        };
        let mut auth = zeroize::Zeroizing::new(Vec::with_capacity(
            route.provider.prefix.len() + lease.expose_secret().len(),
        ));
        auth.extend_from_slice(route.provider.prefix.as_bytes());
        auth.extend_from_slice(lease.expose_secret());
        let Ok(mut auth) = HeaderValue::from_bytes(&auth) else {
            return error(
                StatusCode::BAD_GATEWAY,
                "the stored provider key cannot be sent in a header",
            );
        };
        auth.set_sensitive(true);
        let mut upstream_request = Request::post(uri.clone());
        if let Some(headers) = upstream_request.headers_mut() {
            for name in [header::CONTENT_TYPE, header::ACCEPT] {
                if let Some(value) = parts.headers.get(&name) {
                    headers.insert(name, value.clone());
                }
            }
            if let Some(key) = idempotency_key.and_then(|k| HeaderValue::from_str(k).ok()) {
                headers.insert("idempotency-key", key);
            }
            if let Some(authority) = uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                headers.insert(header::HOST, authority);
            }
            headers.insert(route.provider.header.clone(), auth);
        }
        let Ok(upstream_request) = upstream_request.body(Full::new(body)) else {
            return error(StatusCode::BAD_REQUEST, "the request cannot be forwarded");
        };
        drop(lease);
        let reservation = match self.usage.reserve(&owner.tenant, idempotency_key) {
            Ok(reservation) => reservation,
            Err(refusal) => return answer::ledger_refused(&refusal),
        };
        // Connect first: a request that never reaches the provider is neither counted
        // nor keeps its idempotency key. Returning here, or the client going away (hyper
        // then drops this future), drops the reservation, which gives the key back.
        let connection = match upstream::connect(&uri, route.tls.as_ref()).await {
            Ok(connection) => connection,
            Err(_) => return error(StatusCode::BAD_GATEWAY, "the provider could not be reached"),
        };
        let event = UsageEvent {
            tenant: &owner.tenant,
            environment: env,
            provider,
            key_id: &owner.key_id,
            idempotency_key,
        };
        if let Err(refusal) = reservation.record(&event) {
            return answer::ledger_refused(&refusal);
        }
        let answer = match connection.send(upstream_request).await {
            Ok(answer) => answer,
            Err(_) => return error(StatusCode::BAD_GATEWAY, "the provider did not answer"),
        };
        let (parts, body) = answer.into_parts();
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = parts.status;
        if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type.clone());
        }
        response
    }
}

/// `base` + `/` + `path` (+ `?query`), refusing paths that climb out of the base.
fn upstream_uri(base: &Uri, path: &str, query: Option<&str>) -> Option<Uri> {
    // Encoded dots, slashes and backslashes could become `..` or new segments upstream.
    let lower = path.to_ascii_lowercase();
    let encoded = ["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e));
    if encoded
        || path.contains('\\')
        || path
            .split('/')
            .any(|segment| segment == ".." || segment == ".")
    {
        return None;
    }
    let base_path = base.path().trim_end_matches('/');
    let mut target = format!("{base_path}/{path}");
    if let Some(query) = query {
        target.push('?');
        target.push_str(query);
    }
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(target.parse().ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_paths_stay_under_the_base() {
        let base: Uri = "http://127.0.0.1:9000/api".parse().unwrap();
        assert_eq!(
            upstream_uri(&base, "v1/chat/completions", Some("x=1"))
                .unwrap()
                .to_string(),
            "http://127.0.0.1:9000/api/v1/chat/completions?x=1"
        );
        assert!(upstream_uri(&base, "../admin", None).is_none());
        assert!(upstream_uri(&base, "v1/./x", None).is_none());
        for encoded in ["%2e%2e/admin", "v1/%2E%2E/x", "a%2fb", "a%5C..", "a\\b"] {
            assert!(upstream_uri(&base, encoded, None).is_none(), "{encoded}");
        }
    }
}
