//! Reachability probe for network-namespace tests (`peercompute_tests::netns`): run inside a
//! namespace with `Host::command`, it reports on stdout, one line per event, the addresses it
//! bound and observed, so a test can tell what a NAT did.
//!
//! ```text
//! netns-probe tcp-listen <bind>             "listening <addr>", then per connection
//!                                           "accepted <peer>"; tells the peer its address
//! netns-probe tcp-connect <addr> <ms>       "observed <addr-the-listener-saw> local <addr>"
//! netns-probe udp-echo <bind>               "listening <addr>", then per datagram
//!                                           "from <peer>"; replies with the peer's address
//! netns-probe udp-send <bind> <ms> <addr>…  one socket; per target
//!                                           "observed <target> <addr-the-echo-saw>"
//! ```
//! Exit codes: 0 done, 1 error (refused, unreachable), 2 timed out, 3 bad usage.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["tcp-listen", bind] => tcp_listen(bind),
        ["tcp-connect", addr, ms] => tcp_connect(addr, ms),
        ["udp-echo", bind] => udp_echo(bind),
        ["udp-send", bind, ms, targets @ ..] if !targets.is_empty() => udp_send(bind, ms, targets),
        _ => {
            eprintln!("usage: see the doc comment of tests/src/bin/netns-probe.rs");
            return ExitCode::from(3);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let timed_out = matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            );
            ExitCode::from(if timed_out { 2 } else { 1 })
        }
    }
}

type Result<T> = std::io::Result<T>;

fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    // A test that stopped reading has its answer already.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn parse(addr: &str) -> Result<SocketAddr> {
    addr.parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}")))
}

fn millis(ms: &str) -> Result<Duration> {
    ms.parse()
        .map(Duration::from_millis)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{ms}: {e}")))
}

fn tcp_listen(bind: &str) -> Result<()> {
    let listener = TcpListener::bind(parse(bind)?)?;
    say(format_args!("listening {}", listener.local_addr()?));
    loop {
        let (mut stream, peer) = listener.accept()?;
        say(format_args!("accepted {peer}"));
        let _ = writeln!(stream, "{peer}");
    }
}

fn tcp_connect(addr: &str, ms: &str) -> Result<()> {
    let timeout = millis(ms)?;
    let stream = TcpStream::connect_timeout(&parse(addr)?, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let local = stream.local_addr()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    say(format_args!("observed {} local {local}", line.trim()));
    Ok(())
}

fn udp_echo(bind: &str) -> Result<()> {
    let socket = UdpSocket::bind(parse(bind)?)?;
    say(format_args!("listening {}", socket.local_addr()?));
    let mut buf = [0u8; 1500];
    loop {
        let (_, peer) = socket.recv_from(&mut buf)?;
        say(format_args!("from {peer}"));
        socket.send_to(peer.to_string().as_bytes(), peer)?;
    }
}

fn udp_send(bind: &str, ms: &str, targets: &[&str]) -> Result<()> {
    let socket = UdpSocket::bind(parse(bind)?)?;
    socket.set_read_timeout(Some(millis(ms)?))?;
    let mut buf = [0u8; 1500];
    for target in targets {
        let target = parse(target)?;
        socket.send_to(b"probe", target)?;
        loop {
            let (n, from) = socket.recv_from(&mut buf)?;
            if from == target {
                let seen = String::from_utf8_lossy(&buf[..n]);
                say(format_args!("observed {target} {seen}"));
                break;
            }
        }
    }
    Ok(())
}
