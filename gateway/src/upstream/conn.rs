//! A request connection to a member, dialled when a request first needs it and again after it
//! closes. Forwarded unary calls — the path most requests take — go on keygate's own HTTP/2
//! client (`h2::client`), which writes every queued call in one go; streams (watches,
//! keep-alives, snapshots) and tonic's clients go on a hyper HTTP/2 connection beside it.

use crate::corked::Corked;
use crate::h2::client::{self, CallError, Client, UnaryRequest, UnaryResponse};
use crate::tls::UpstreamTls;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tonic::body::Body;
use tonic::ConnectError;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The HTTP/2 settings of a request connection.
#[derive(Clone, Copy)]
pub struct Settings {
    pub dial_timeout: Duration,
    pub keep_alive_interval: Duration,
    pub keep_alive_timeout: Duration,
    pub connection_window: u32,
    pub stream_window: u32,
}

/// A member's request connection. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Conn {
    inner: Arc<Inner>,
}

struct Inner {
    scheme: Scheme,
    authority: Authority,
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    http2: Builder<TokioExecutor>,
    dial_timeout: Duration,
    /// The open connection's handle: None before the first dial.
    current: Mutex<Option<SendRequest<Body>>>,
    /// Held while dialling, so that requests that arrive meanwhile wait for that one dial.
    dialling: tokio::sync::Mutex<()>,
    /// keygate's own client for unary calls, and its dial.
    unary: Mutex<Option<Client>>,
    unary_dialling: tokio::sync::Mutex<()>,
    unary_settings: client::Settings,
}

impl Conn {
    /// A connection to `url` (http:// or https://, with `tls` for the latter); nothing is
    /// dialled until a request needs it.
    pub fn new(url: &str, settings: Settings, tls: Option<&UpstreamTls>) -> Result<Conn, String> {
        let uri: Uri = url.parse().map_err(|e| format!("{e}"))?;
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = uri.authority().cloned().ok_or("no host")?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(2379);
        let tls = match (scheme == Scheme::HTTPS, tls) {
            (true, Some(tls)) => Some(connector(tls, host)?),
            _ => None,
        };
        let mut http2 = Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .initial_connection_window_size(settings.connection_window)
            .initial_stream_window_size(settings.stream_window)
            .keep_alive_interval(settings.keep_alive_interval)
            .keep_alive_timeout(settings.keep_alive_timeout)
            .keep_alive_while_idle(true);
        Ok(Conn {
            inner: Arc::new(Inner {
                scheme,
                authority: authority.clone(),
                host: host.to_string(),
                port,
                tls,
                http2,
                dial_timeout: settings.dial_timeout,
                current: Mutex::new(None),
                dialling: tokio::sync::Mutex::new(()),
                unary: Mutex::new(None),
                unary_dialling: tokio::sync::Mutex::new(()),
                unary_settings: client::Settings {
                    stream_window: settings.stream_window,
                    connection_window: settings.connection_window,
                    keep_alive_interval: settings.keep_alive_interval,
                    keep_alive_timeout: settings.keep_alive_timeout,
                },
            }),
        })
    }

    /// Sends `request` (its URI a path) to the member, dialling first when needed.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, BoxError> {
        self.inner.send(request).await
    }

    /// One unary call on keygate's own client, dialling first when needed. A call refused
    /// because the connection had just closed is sent once more on a fresh one.
    pub async fn unary(&self, request: UnaryRequest) -> Result<UnaryResponse, CallError> {
        let client = self.inner.unary_client().await?;
        if !client.is_closed() {
            return client.call(request).await;
        }
        self.inner.unary_client().await?.call(request).await
    }
}

/// TLS for an https:// member: keygate's client configuration with HTTP/2 asked for by ALPN.
fn connector(
    tls: &UpstreamTls,
    host: &str,
) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), String> {
    let name = tls.server_name.clone().unwrap_or_else(|| host.to_string());
    let name = ServerName::try_from(name).map_err(|e| format!("server name: {e}"))?;
    let mut config = (*tls.rustls).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

impl tower::Service<Request<Body>> for Conn {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { inner.send(request).await })
    }
}

impl Inner {
    async fn send(&self, mut request: Request<Body>) -> Result<Response<Incoming>, BoxError> {
        self.set_origin(&mut request)?;
        let mut sender = self.sender().await?;
        match sender.try_send_request(request).await {
            Ok(response) => Ok(response),
            // The connection closed before the request left: it is safe to send it once more,
            // on a fresh connection.
            Err(mut e) => match e.take_message() {
                Some(request) => Ok(self.sender().await?.send_request(request).await?),
                None => Err(e.into_error().into()),
            },
        }
    }

    /// The request's URI made absolute, as HTTP/2 needs for `:scheme` and `:authority`.
    fn set_origin(&self, request: &mut Request<Body>) -> Result<(), BoxError> {
        let path =
            (request.uri().path_and_query().cloned()).unwrap_or(PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()?;
        Ok(())
    }

    /// The open unary client, dialling first when there is none or it has closed. A dial
    /// that fails left nothing sent.
    async fn unary_client(&self) -> Result<Client, CallError> {
        if let Some(client) = self.open_unary() {
            return Ok(client);
        }
        let _dialling = self.unary_dialling.lock().await;
        if let Some(client) = self.open_unary() {
            return Ok(client);
        }
        let not_sent = |e: BoxError| CallError::NotSent(format!("tcp connect error: {e}"));
        let client = match tokio::time::timeout(self.dial_timeout, self.dial_unary()).await {
            Ok(result) => result.map_err(not_sent)?,
            Err(_) => return Err(not_sent("connect timed out".into())),
        };
        *self.unary.lock().unwrap_or_else(PoisonError::into_inner) = Some(client.clone());
        Ok(client)
    }

    fn open_unary(&self) -> Option<Client> {
        let current = self.unary.lock().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().filter(|c| !c.is_closed()).cloned()
    }

    async fn dial_unary(&self) -> Result<Client, BoxError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        let (scheme, authority) = (self.scheme.as_str(), self.authority.as_str());
        let member = format!("{scheme}://{authority}");
        let client = match &self.tls {
            None => {
                let (client, driver) = Client::new(tcp, self.unary_settings, scheme, authority);
                tokio::spawn(async move {
                    driver.await;
                    tracing::debug!(%member, "unary connection ended");
                });
                client
            }
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await?;
                let (client, driver) = Client::new(tls, self.unary_settings, scheme, authority);
                tokio::spawn(async move {
                    driver.await;
                    tracing::debug!(%member, "unary connection ended");
                });
                client
            }
        };
        Ok(client)
    }

    /// The open connection's handle, dialling first when there is none or it has closed.
    async fn sender(&self) -> Result<SendRequest<Body>, BoxError> {
        if let Some(sender) = self.open() {
            return Ok(sender);
        }
        let _dialling = self.dialling.lock().await;
        if let Some(sender) = self.open() {
            return Ok(sender);
        }
        let sender = self.dial().await.map_err(ConnectError)?;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
        Ok(sender)
    }

    fn open(&self) -> Option<SendRequest<Body>> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// A new connection: TCP (with writes coalesced, see `corked`), TLS when configured, and
    /// the HTTP/2 handshake, within the dial timeout. Any failure here left no request sent.
    async fn dial(&self) -> Result<SendRequest<Body>, BoxError> {
        let connect = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
            tcp.set_nodelay(true)?;
            let tcp = Corked::new(tcp);
            match &self.tls {
                None => self.handshake(tcp).await,
                Some((connector, name)) => {
                    let tls = connector.connect(name.clone(), tcp).await?;
                    self.handshake(tls).await
                }
            }
        };
        match tokio::time::timeout(self.dial_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out").into()),
        }
    }

    async fn handshake<T>(&self, io: T) -> Result<SendRequest<Body>, BoxError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = self.http2.handshake(TokioIo::new(io)).await?;
        let member = format!("{}://{}", self.scheme, self.authority);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%member, "request connection ended: {e}");
            }
        });
        Ok(sender)
    }
}
