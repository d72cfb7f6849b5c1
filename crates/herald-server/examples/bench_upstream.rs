//! A minimal logic-layer upstream for the gateway-route benchmark (docs/benchmarks.md,
//! "Gateway routes"): hyper HTTP/1.1 on one thread, answering every request with 200 and a
//! small JSON body after reading the request body. The benchmark loads it directly (the
//! baseline) and through a Herald gateway route, in the same run.
//!
//! `cargo run --release -p herald-server --example bench_upstream -- [PORT]` (0: any free port;
//! the port is printed as `listening on ADDR`).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let read = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                    let body = Bytes::from(format!("{{\"ok\":true,\"read\":{read}}}"));
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(body)))
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}
