//! The `peercompute-demo` binary: parses `--port` / `PORT`, binds `0.0.0.0`, prints the
//! `listening on` line, and serves until SIGTERM or SIGINT, then exits 0. It may run as PID 1
//! (where the kernel ignores unhandled SIGTERM), so the signals are handled explicitly.

use std::net::SocketAddr;
use std::process::ExitCode;

use peercompute_demo::{Info, log_line, serve};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

const DEFAULT_PORT: u16 = 8080;

const USAGE: &str = "\
peercompute-demo: the Peer Compute demo web app (HTTP/1.1 + WebSocket)

Usage: peercompute-demo [--port <PORT>]

Options:
  -p, --port <PORT>  TCP port to listen on, on 0.0.0.0 [env: PORT] [default: 8080]
  -h, --help         Print this help
  -V, --version      Print the version

Routes:
  GET /              HTML page: serving provider, request headers, live WebSocket counter
  GET /ws            WebSocket: {\"counter\": n} every second, {\"echo\": ...} per text message
  GET /api/info      the page's information as JSON
  GET /healthz       ok
  GET /proc-status   /proc/self/status (CapEff, NoNewPrivs, Seccomp)

Environment shown on the page (set by the Peer Compute provider):
  PEERCOMPUTE_PROVIDER, PEERCOMPUTE_DEPLOYMENT, PEERCOMPUTE_NAME

Examples:
  peercompute-demo                  # listen on 0.0.0.0:8080
  PORT=3000 peercompute-demo        # listen on 0.0.0.0:3000
  peercompute-demo --port 0         # any free port; the log line says which
";

#[derive(Debug, PartialEq)]
enum Command {
    Run { port: u16 },
    Help,
    Version,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let port = match parse(std::env::args().skip(1), std::env::var("PORT").ok()) {
        Ok(Command::Run { port }) => port,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("peercompute-demo {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("peercompute-demo: {msg}\nTry 'peercompute-demo --help'.");
            return ExitCode::from(2);
        }
    };
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("peercompute-demo: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("peercompute-demo: cannot listen on {addr}: {e} (is the port taken?)");
            return ExitCode::from(1);
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    let info = Info::from_env();
    log_line(format_args!(
        "peercompute-demo listening on http://{local} ({})",
        info.summary()
    ));
    tokio::select! {
        () = serve(listener, info) => {}
        _ = term.recv() => log_line(format_args!("received SIGTERM, exiting")),
        _ = int.recv() => log_line(format_args!("received SIGINT, exiting")),
    }
    ExitCode::SUCCESS
}

/// Flags win over `PORT`, which wins over the default.
fn parse(
    mut args: impl Iterator<Item = String>,
    env_port: Option<String>,
) -> Result<Command, String> {
    let mut port = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-p" | "--port" => {
                let value = args.next().ok_or("--port needs a value")?;
                port = Some(parse_port(&value, "--port")?);
            }
            _ => match arg.strip_prefix("--port=") {
                Some(value) => port = Some(parse_port(value, "--port")?),
                None => return Err(format!("unexpected argument '{arg}'")),
            },
        }
    }
    let port = match (port, env_port) {
        (Some(port), _) => port,
        (None, Some(env)) if !env.trim().is_empty() => parse_port(env.trim(), "PORT")?,
        (None, _) => DEFAULT_PORT,
    };
    Ok(Command::Run { port })
}

fn parse_port(value: &str, from: &str) -> Result<u16, String> {
    value
        .parse()
        .map_err(|_| format!("{from}: '{value}' is not a port number (0-65535)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: Option<&str>) -> Result<Command, String> {
        parse(args.iter().map(|a| a.to_string()), env.map(str::to_owned))
    }

    #[test]
    fn port_precedence_table() {
        for (args, env, want) in [
            (&[][..], None, 8080),
            (&[][..], Some("3000"), 3000),
            (&[][..], Some(" "), 8080),
            (&["--port", "9"][..], Some("3000"), 9),
            (&["-p", "0"][..], None, 0),
            (&["--port=65535"][..], None, 65535),
        ] {
            assert_eq!(
                run(args, env),
                Ok(Command::Run { port: want }),
                "{args:?} {env:?}"
            );
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_default() {
        assert!(run(&["--port"], None).is_err());
        assert!(run(&["--port", "http"], None).is_err());
        assert!(run(&["--port=70000"], None).is_err());
        assert!(run(&["--bogus"], None).is_err());
        assert!(run(&[], Some("eighty")).is_err());
        assert_eq!(run(&["--port", "1", "--help"], None), Ok(Command::Help));
        assert_eq!(run(&["-V"], None), Ok(Command::Version));
    }
}
