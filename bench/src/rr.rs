// SPDX-License-Identifier: Apache-2.0
//! Request/response and connect/request/response rates, like netperf's TCP_RR and TCP_CRR, with
//! plain blocking `std::net` sockets.
//!
//! The protocol is one byte each way. The client's byte says what it wants:
//! - [`REQ_KEEP`] (`rr`): the server answers and waits for the next byte on the same connection;
//! - [`REQ_CLOSE`] (`crr`): the server answers and closes. Closing first on the server side keeps
//!   TIME_WAIT there, so the client never runs out of ephemeral ports however many connections
//!   it makes.
//!
//! The server answers `crr` connections inline in its accept loop (no thread per connection, so a
//! thread spawn is not part of what CRR measures) and gives each `rr` connection a thread.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// "Answer and keep the connection open."
pub const REQ_KEEP: u8 = b'R';
/// "Answer and close."
pub const REQ_CLOSE: u8 = b'C';
/// A server gives up on a silent connection after this long.
const SERVER_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client gives up on a connect or an answer after this long.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// What the server prints on stdout once it listens.
pub const READY_LINE: &str = "ready";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One connection, one-byte ping-pong (TCP_RR).
    Rr,
    /// A new connection per transaction (TCP_CRR).
    Crr,
}

/// What `rr-client` prints, as one JSON line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RrResult {
    pub mode: Mode,
    pub transactions: u64,
    /// Transactions that failed (CRR only; an RR failure ends the run with an error).
    pub errors: u64,
    pub seconds: f64,
    pub per_second: f64,
}

/// Listen on `port` (all addresses), print [`READY_LINE`], serve until killed.
pub fn serve(port: u16) -> Result<()> {
    let listener =
        TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("binding tcp/{port}"))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{READY_LINE}")?;
        out.flush()?;
    }
    serve_listener(&listener);
    Ok(())
}

/// Answer every connection `listener` accepts, forever.
fn serve_listener(listener: &TcpListener) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let first = conn
            .set_nodelay(true)
            .and_then(|()| conn.set_read_timeout(Some(SERVER_IDLE_TIMEOUT)))
            .and_then(|()| read_byte(&mut conn));
        match first {
            Ok(Some(REQ_CLOSE)) => {
                // Dropping `conn` closes it: the server's FIN comes first.
                let _ = conn.write_all(&[REQ_CLOSE]);
            }
            Ok(Some(byte)) => {
                std::thread::spawn(move || echo(conn, byte));
            }
            Ok(None) | Err(_) => {}
        }
    }
}

/// Answer every byte with itself until the peer closes (or goes silent).
fn echo(mut conn: TcpStream, first: u8) {
    let mut byte = first;
    loop {
        if conn.write_all(&[byte]).is_err() {
            return;
        }
        match read_byte(&mut conn) {
            Ok(Some(next)) => byte = next,
            Ok(None) | Err(_) => return,
        }
    }
}

/// One byte, or `None` at end of stream.
fn read_byte(conn: &mut TcpStream) -> std::io::Result<Option<u8>> {
    let mut buf = [0u8; 1];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(buf[0])),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// Run transactions against `addr` for `duration` and count them.
pub fn run_client(addr: SocketAddr, duration: Duration, mode: Mode) -> Result<RrResult> {
    let (transactions, errors, elapsed) = match mode {
        Mode::Rr => rr(addr, duration)?,
        Mode::Crr => crr(addr, duration)?,
    };
    let seconds = elapsed.as_secs_f64();
    Ok(RrResult {
        mode,
        transactions,
        errors,
        seconds,
        per_second: rate(transactions, seconds),
    })
}

#[expect(
    clippy::cast_precision_loss,
    reason = "a count of transactions fits an f64's 52 bits"
)]
fn rate(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let conn = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    Ok(conn)
}

/// Checking the clock every transaction would be cheap too; every 64 keeps it out of the loop.
const CLOCK_EVERY: u64 = 64;

fn rr(addr: SocketAddr, duration: Duration) -> Result<(u64, u64, Duration)> {
    let mut conn = connect(addr).with_context(|| format!("connecting to {addr}"))?;
    let start = Instant::now();
    let mut count = 0u64;
    loop {
        conn.write_all(&[REQ_KEEP]).context("sending a request")?;
        match read_byte(&mut conn).context("reading an answer")? {
            Some(REQ_KEEP) => count += 1,
            other => bail!("unexpected answer {other:?} after {count} transactions"),
        }
        if count.is_multiple_of(CLOCK_EVERY) && start.elapsed() >= duration {
            return Ok((count, 0, start.elapsed()));
        }
    }
}

fn crr(addr: SocketAddr, duration: Duration) -> Result<(u64, u64, Duration)> {
    let start = Instant::now();
    let (mut count, mut errors) = (0u64, 0u64);
    while start.elapsed() < duration {
        match one_crr(addr) {
            Ok(()) => count += 1,
            Err(_) => errors += 1,
        }
        // A server that refuses everything must not turn this into a busy error loop.
        if errors > 100 && errors > count {
            bail!(
                "{errors} of {} connections to {addr} failed",
                count + errors
            );
        }
    }
    Ok((count, errors, start.elapsed()))
}

/// Connect, ask, read the answer and the server's FIN, close.
fn one_crr(addr: SocketAddr) -> std::io::Result<()> {
    let mut conn = connect(addr)?;
    conn.write_all(&[REQ_CLOSE])?;
    match read_byte(&mut conn)? {
        Some(REQ_CLOSE) => {}
        _ => return Err(ErrorKind::InvalidData.into()),
    }
    match read_byte(&mut conn)? {
        None => Ok(()),
        Some(_) => Err(ErrorKind::InvalidData.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// The real server on an ephemeral loopback port.
    fn spawn_server() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || serve_listener(&listener));
        addr
    }

    #[test]
    fn rr_and_crr_count_transactions_without_errors() {
        let addr = spawn_server();
        for mode in [Mode::Rr, Mode::Crr] {
            let result = run_client(addr, Duration::from_millis(100), mode).unwrap();
            assert_eq!(result.mode, mode);
            assert!(result.transactions > 0, "{result:?}");
            assert_eq!(result.errors, 0, "{result:?}");
            assert!(result.per_second > 0.0, "{result:?}");
        }
    }

    #[test]
    fn crr_against_nothing_fails_instead_of_spinning() {
        // Bind then drop: a port nobody listens on.
        let addr = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap();
        let err = run_client(addr, Duration::from_secs(30), Mode::Crr).unwrap_err();
        assert!(err.to_string().contains("failed"), "{err}");
    }

    #[test]
    fn result_line_round_trips() {
        let result = RrResult {
            mode: Mode::Crr,
            transactions: 10,
            errors: 1,
            seconds: 2.0,
            per_second: 5.0,
        };
        let line = serde_json::to_string(&result).unwrap();
        assert!(line.contains(r#""mode":"crr""#), "{line}");
        assert_eq!(serde_json::from_str::<RrResult>(&line).unwrap(), result);
    }
}
