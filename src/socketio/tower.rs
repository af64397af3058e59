//! tower integration: [`SocketIo`] as a [`tower_service::Service`], and [`SocketIoLayer`], a
//! [`tower_layer::Layer`] that serves the Socket.IO path and hands every other request to the inner
//! service, so an axum application mounts Tidings with one line:
//!
//! ```no_run
//! # async fn index() -> &'static str { "hello" }
//! use axum::{Router, routing::get};
//! use tidings::socketio::{Config, SocketIo};
//!
//! # async fn run() -> std::io::Result<()> {
//! let io = SocketIo::new(Config::default());
//! io.ns("/", |socket| {
//!     let _ = socket.emit("hello", "world");
//! });
//! let app = Router::new().route("/", get(index)).layer(io.layer());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! WebSockets work through the stack as long as the server keeps hyper's upgrade in the request's
//! extensions (axum's and hyper-util's servers do). The client's address, which per-address limits
//! and `trusted_proxies` use, is read from a [`SocketAddr`] in the request's extensions when one is
//! there (axum users insert it from `ConnectInfo`, see `examples/axum.rs`); without one those limits
//! see no address.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::{Either, Map};
use http::{Request, Response};
use http_body_util::Either as EitherBody;

use super::SocketIo;
use crate::engineio::error::Body;

/// The future of a request the Socket.IO endpoint answers.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send + 'static>>;

fn answer<B>(io: &SocketIo, req: Request<B>) -> ResponseFuture
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = io.clone();
    let remote = req.extensions().get::<SocketAddr>().copied();
    Box::pin(async move { Ok(io.handle(req, remote).await) })
}

/// The whole server as one service: requests on the Socket.IO path are answered, others get 404.
impl<B> tower_service::Service<Request<B>> for SocketIo
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if self.engine().matches(req.uri().path()) {
            answer(self, req)
        } else {
            Box::pin(std::future::ready(Ok(crate::server::not_found())))
        }
    }
}

impl SocketIo {
    /// A [`tower_layer::Layer`] that serves this server's path in front of an inner service
    /// (`Router::new().route("/", get(index)).layer(io.layer())`).
    pub fn layer(&self) -> SocketIoLayer {
        SocketIoLayer { io: self.clone() }
    }
}

/// Serves the Socket.IO path in front of an inner service; see [`SocketIo::layer`].
#[derive(Clone, Debug)]
pub struct SocketIoLayer {
    io: SocketIo,
}

impl<S> tower_layer::Layer<S> for SocketIoLayer {
    type Service = SocketIoService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SocketIoService {
            io: self.io.clone(),
            inner,
        }
    }
}

/// The service [`SocketIoLayer`] makes: Socket.IO requests to the server, the rest to `inner`.
#[derive(Clone, Debug)]
pub struct SocketIoService<S> {
    io: SocketIo,
    inner: S,
}

/// A response of the stack: the Socket.IO endpoint's (left) or the inner service's (right).
type StackResponse<R> = Response<EitherBody<Body, R>>;

/// Maps the inner service's answer into the stack's response.
type FromInner<R, E> = fn(Result<Response<R>, E>) -> Result<StackResponse<R>, E>;

/// Maps the endpoint's answer (which cannot fail) into the stack's response.
type FromOwn<R, E> = fn(Result<Response<Body>, Infallible>) -> Result<StackResponse<R>, E>;

fn from_inner<R, E>(result: Result<Response<R>, E>) -> Result<StackResponse<R>, E> {
    result.map(|res| res.map(EitherBody::Right))
}

fn from_own<R, E>(result: Result<Response<Body>, Infallible>) -> Result<StackResponse<R>, E> {
    match result {
        Ok(res) => Ok(res.map(EitherBody::Left)),
        Err(never) => match never {},
    }
}

impl<S, B, R> tower_service::Service<Request<B>> for SocketIoService<S>
where
    S: tower_service::Service<Request<B>, Response = Response<R>> + Clone,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = StackResponse<R>;
    type Error = S::Error;
    type Future =
        Either<Map<ResponseFuture, FromOwn<R, S::Error>>, Map<S::Future, FromInner<R, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if self.io.engine().matches(req.uri().path()) {
            Either::Left(answer(&self.io, req).map(from_own as FromOwn<R, S::Error>))
        } else {
            // The readiness `poll_ready` reserved belongs to `self.inner`: call that one, and keep
            // a fresh clone for the next request (tower's usual pattern for cloned services).
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            Either::Right(inner.call(req).map(from_inner as FromInner<R, S::Error>))
        }
    }
}
