//! Mounting Tidings inside an existing hyper application: requests on the Socket.IO path go to
//! `io.handle`, everything else to the application's own routes.
//!
//! `cargo run --example mount_hyper`, then GET http://127.0.0.1:3000/hello or connect a Socket.IO client.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tidings::socketio::{Config, SocketIo};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let io = SocketIo::new(Config::default());
    io.ns("/", |socket| {
        if let Err(err) = socket.emit("hello", "from a hyper app") {
            eprintln!("hello not sent: {err}");
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    loop {
        let (stream, remote) = listener.accept().await?;
        let io = io.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let io = io.clone();
                async move {
                    if io.engine().matches(req.uri().path()) {
                        return Ok::<_, Infallible>(io.handle(req, Some(remote)).await);
                    }
                    // The application's own routes.
                    Ok(hyper::Response::new(Full::new(Bytes::from_static(
                        b"hello\n",
                    ))))
                }
            });
            // `with_upgrades` lets the WebSocket transport take over the connection.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
