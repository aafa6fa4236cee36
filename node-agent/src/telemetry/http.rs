//! Serving [`super::Telemetry`] over HTTP/1 with hyper: each connection on a task of its own,
//! with a header timeout, so idle or slow clients cannot starve the kubelet's probes.

use std::{convert::Infallible, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};
use tracing::debug;

use super::Telemetry;

/// A client must send its request head within this long.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 512;

/// Serves the endpoints forever, each connection on a task of its own.
pub async fn serve(listener: TcpListener, telemetry: Arc<Telemetry>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, say: back off instead of spinning.
                debug!(error = %e, "accepting a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let telemetry = telemetry.clone();
                async move { Ok::<_, Infallible>(answer(&telemetry, &request)) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!(%peer, error = %e, "metrics connection");
            }
            drop(slot);
        });
    }
}

fn answer<B>(telemetry: &Telemetry, request: &Request<B>) -> Response<Full<Bytes>> {
    let (code, body) = if request.method() == Method::GET {
        telemetry.respond(request.uri().path())
    } else {
        (405, "only GET\n".to_owned())
    };
    Response::builder()
        .status(code)
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid status and header")
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use std::{path::PathBuf, sync::atomic::Ordering};

    use super::*;
    use crate::telemetry::{now_ms, STUCK_AFTER};

    async fn get(address: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    async fn serving() -> (std::net::SocketAddr, Arc<Telemetry>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let telemetry = Arc::new(Telemetry::new());
        tokio::spawn(serve(listener, telemetry.clone()));
        (address, telemetry)
    }

    #[tokio::test]
    async fn health_answers_follow_the_agent_and_its_heartbeat() {
        let (address, telemetry) = serving().await;
        assert!(get(address, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(address, "/readyz").await.starts_with("HTTP/1.1 503"));
        telemetry.set_started(PathBuf::from("/nonexistent"), PathBuf::from("/nonexistent"));
        assert!(get(address, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get(address, "/healthz").await.starts_with("HTTP/1.1 200"));
        // A heartbeat older than STUCK_AFTER: the loop is stuck.
        telemetry.heartbeat_ms.store(
            now_ms() - STUCK_AFTER.as_millis() as u64 - 1000,
            Ordering::Release,
        );
        let stuck = get(address, "/healthz").await;
        assert!(stuck.starts_with("HTTP/1.1 503"), "{stuck}");
        assert!(get(address, "/nope").await.starts_with("HTTP/1.1 404"));
    }

    #[tokio::test]
    async fn a_probe_is_answered_while_a_hundred_idle_connections_wait() {
        let (address, telemetry) = serving().await;
        telemetry.set_started(PathBuf::from("/nonexistent"), PathBuf::from("/nonexistent"));
        let mut idle = Vec::new();
        for _ in 0..100 {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            // Half a request head, then nothing.
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\n")
                .await
                .unwrap();
            idle.push(stream);
        }
        let answer = get(address, "/healthz").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // Served beside them, not after them: every idle connection is still open and
        // unanswered (a server that took them in turn would have had to time each one out, and
        // closed it, before reaching the probe).
        let mut buf = [0u8; 64];
        for stream in &idle {
            match stream.try_read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                other => panic!("an idle connection was answered or closed: {other:?}"),
            }
        }
    }
}
