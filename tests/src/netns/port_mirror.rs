//! Container ports of a robot in a namespace, reachable from that namespace.
//!
//! Docker publishes a container's port on 127.0.0.1 of the *root* namespace, so a provider
//! running in a site's namespace cannot health-check its own containers. [`PortMirror`] looks
//! at the engine every 100 ms for running containers with the robot's provider label and, for
//! each port published on 127.0.0.1, binds the same port on 127.0.0.1 *inside* the robot's
//! namespace (a socket created there by [`Host::enter`] stays there) and forwards each
//! connection it accepts to the root namespace's published port (the test process lives in the
//! root namespace, so a plain connect reaches it). Only that robot's containers are mirrored,
//! into that robot's namespace: robots sharing the one engine never see each other's ports.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::ListContainersOptions;
use tokio::net::{TcpListener, TcpStream};

use super::Host;

/// Mirrors one robot's published container ports into its namespace; stops when dropped.
#[derive(Debug)]
pub struct PortMirror {
    task: tokio::task::JoinHandle<()>,
}

impl PortMirror {
    /// Starts mirroring the ports of running containers labelled `label_key=label_value` into
    /// `host`'s namespace.
    pub fn start(host: &Host, label_key: &str, label_value: &str) -> PortMirror {
        let host = host.clone();
        let filter = format!("{label_key}={label_value}");
        let task = tokio::spawn(async move {
            let docker = Docker::connect_with_defaults().expect("a Docker engine");
            let mut mirrored: HashMap<u16, tokio::task::JoinHandle<()>> = HashMap::new();
            loop {
                let options = ListContainersOptions {
                    filters: Some(HashMap::from([("label".to_owned(), vec![filter.clone()])])),
                    ..Default::default()
                };
                let ports: Vec<u16> = match docker.list_containers(Some(options)).await {
                    Ok(list) => list
                        .into_iter()
                        .flat_map(|c| c.ports.unwrap_or_default())
                        .filter(|p| p.ip.as_deref() == Some("127.0.0.1"))
                        .filter_map(|p| p.public_port)
                        .collect(),
                    Err(e) => {
                        eprintln!("port mirror: cannot list containers: {e}");
                        Vec::new()
                    }
                };
                // Ports of containers gone are closed (Docker may give them to another).
                mirrored.retain(|port, task| {
                    let keep = ports.contains(port);
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                for port in ports {
                    if mirrored.contains_key(&port) {
                        continue;
                    }
                    match host.enter(|| std::net::TcpListener::bind(("127.0.0.1", port))) {
                        Ok(listener) => {
                            mirrored.insert(port, tokio::spawn(forward(listener, port)));
                        }
                        Err(e) => eprintln!(
                            "port mirror: cannot bind 127.0.0.1:{port} in {}: {e}",
                            host.name()
                        ),
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        PortMirror { task }
    }
}

impl Drop for PortMirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts on `listener` (in the robot's namespace) and splices each connection to the
/// root namespace's `127.0.0.1:port`.
async fn forward(listener: std::net::TcpListener, port: u16) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!("port mirror: listener on {port}: {e}");
            return;
        }
    };
    let mut conns = tokio::task::JoinSet::new();
    while let Ok((mut inbound, _)) = listener.accept().await {
        conns.spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", port)).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}
