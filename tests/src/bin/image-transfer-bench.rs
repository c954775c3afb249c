//! `image-transfer-bench`: a peer-to-peer image transfer (`/peercompute/image/1` over libp2p on
//! loopback, every blob hashed as it streams) against `docker pull` of the same image from a
//! local registry (Debian's `docker-registry`), on the same machine and engine.
//!
//! ```text
//! cargo build --release -p peercompute-tests --bin image-transfer-bench
//! target/release/image-transfer-bench --mib 100
//! ```
//!
//! The image is built here (`FROM scratch`, one layer holding `--mib` MiB of random bytes, so
//! neither side gains from compression). Registry: the image is pushed, every local copy removed,
//! then `docker pull` by digest is timed (download, decompress, extract). Peers: phases timed
//! one by one — export (`docker save` to a file), transfer (a second libp2p node downloads every
//! blob from the first, TCP then QUIC, hashing each), load (the `docker load` archive streamed
//! from the blobs into the engine, the copy removed first). Figures are Gbit/s of
//! the image's uncompressed bytes; the ratios are registry time ÷ peer time (above 1: peers
//! faster) for the transfer alone, for the robot's side (transfer + load, what `docker pull`
//! does) and for export + transfer + load (the releaser's export included).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use peercompute_fleet::{BlobDigest, ImageMessage};
use peercompute_identity::Identity;
use peercompute_p2p::{
    BlobSource, ImageShelf, ImageStream, Multiaddr, Node, NodeConfig, image_protocol, serve_images,
};
use peercompute_runtime::testsupport::{Cleanup, LocalRegistry, ScratchImage, unique_name};
use peercompute_runtime::{DockerRuntime, SaveIndex};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

#[derive(Parser, Debug)]
#[command(
    name = "image-transfer-bench",
    about = "Peer-to-peer image transfer vs docker pull from a local registry, same image, same machine",
    after_help = "Examples:\n  image-transfer-bench\n  image-transfer-bench --mib 500 --rounds 3"
)]
struct Args {
    /// Image size in MiB (one layer of random bytes).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=4096))]
    mib: u32,
    /// Rounds of each measurement (the best is printed).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
}

fn gbits(bytes: u64, took: Duration) -> f64 {
    bytes as f64 * 8.0 / took.as_secs_f64() / 1e9
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = DockerRuntime::connect().await.context("a Docker engine")?;
    let cleanup = Cleanup::new();
    let dir = tempfile::tempdir()?;

    let tag = format!("{}:1", unique_name("pc-image-bench"));
    cleanup.image(&tag);
    let random: Vec<u8> = (0..args.mib as usize * 1024 * 1024)
        .map(|_| rand::random::<u8>())
        .collect();
    ScratchImage::new(&tag)
        .file("/data.bin", random, 0o644)
        .load(&runtime)
        .await
        .context("build the image")?;

    // Export once: the archive both sides start from.
    let archive = dir.path().join("image.tar");
    let t = Instant::now();
    runtime.export_image(&tag, &archive).await?;
    let export = t.elapsed();
    let index = SaveIndex::read(std::io::BufReader::new(std::fs::File::open(&archive)?))?;
    let bytes: u64 = index.manifest.blobs().iter().map(|b| b.size).sum();
    println!(
        "image: {} MB uncompressed in {} layer(s), peer digest {}",
        bytes / 1_000_000,
        index.manifest.layers.len(),
        index.manifest.digest
    );
    println!("export (docker save): {export:?}");

    // Registry baseline.
    let registry = LocalRegistry::start().await?;
    let repository = format!("{}/peercompute/{}", registry.host(), unique_name("bench"));
    registry.push(&runtime, &tag, &repository, "v1").await?;
    cleanup.image(&format!("{repository}:v1"));
    let pinned = runtime.resolve_digest(&format!("{repository}:v1")).await?;
    let mut pull = Duration::MAX;
    for _ in 0..args.rounds {
        remove_image(&index)?;
        let t = Instant::now();
        runtime.ensure_pinned(&pinned, |_| {}).await?;
        pull = pull.min(t.elapsed());
    }
    println!(
        "registry: docker pull {:?} = {:.2} Gbit/s",
        pull,
        gbits(bytes, pull)
    );

    // Peers: a server node with the archive on its shelf, a client node downloading.
    let mut best = Duration::MAX;
    for (name, listen) in [
        ("tcp", "/ip4/127.0.0.1/tcp/0"),
        ("quic", "/ip4/127.0.0.1/udp/0/quic-v1"),
    ] {
        for _ in 0..args.rounds {
            let took = transfer(&index, &archive, listen, dir.path()).await?;
            println!(
                "peer transfer over {name}: {took:?} = {:.2} Gbit/s",
                gbits(bytes, took)
            );
            best = best.min(took);
        }
    }
    let blobs = dir.path().join("blobs");
    let mut load = Duration::MAX;
    for _ in 0..args.rounds {
        remove_image(&index)?;
        let t = Instant::now();
        runtime
            .load_blobs(&index.manifest, &blobs, std::slice::from_ref(&tag))
            .await?;
        load = load.min(t.elapsed());
    }
    println!("load (docker load of the archive streamed from the blobs): {load:?}");
    // What a robot does (the export is the releaser's, once per release; robots serving each
    // other send the blobs they stored): the figure to hold against `docker pull`.
    let robot = best + load;
    println!(
        "peer robot side (transfer + load): {robot:?} = {:.2} Gbit/s",
        gbits(bytes, robot)
    );
    let whole = export + best + load;
    println!(
        "peer total (export + transfer + load): {whole:?} = {:.2} Gbit/s",
        gbits(bytes, whole)
    );
    println!(
        "ratio peer/registry (registry time / peer time): transfer alone {:.2}x, robot side {:.2}x, export+transfer+load {:.2}x",
        pull.as_secs_f64() / best.as_secs_f64(),
        pull.as_secs_f64() / robot.as_secs_f64(),
        pull.as_secs_f64() / whole.as_secs_f64()
    );
    Ok(())
}

/// Removes every copy of the image from the engine (by id, forced: it has several tags).
fn remove_image(index: &SaveIndex) -> Result<()> {
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &index.manifest.config.digest])
        .output()
        .context("run docker rmi")?;
    Ok(())
}

/// Serves the archive from one node and downloads every blob with another; the time from the
/// first `Want` to the last blob verified.
async fn transfer(index: &SaveIndex, archive: &Path, listen: &str, dir: &Path) -> Result<Duration> {
    let config = |listen: Vec<Multiaddr>| NodeConfig {
        listen,
        mdns: false,
        ..NodeConfig::default()
    };
    let server = Node::start(&Identity::generate()?, config(vec![listen.parse()?])).await?;
    let client = Node::start(&Identity::generate()?, config(vec![])).await?;
    let shelf = ImageShelf::default();
    let digest: BlobDigest = index.manifest.digest.parse()?;
    let mut blobs = Vec::new();
    for blob in index.manifest.blobs() {
        let range = index.ranges[&blob.digest];
        blobs.push((
            blob.digest.parse()?,
            BlobSource {
                path: archive.to_owned(),
                offset: range.offset,
                size: range.size,
            },
        ));
    }
    shelf.add(digest, index.manifest.bytes.clone(), blobs);
    let service = tokio::spawn(serve_images(server.clone(), shelf, Arc::new(|_, _| Ok(()))));
    let mut addrs = server.listen_addrs();
    for _ in 0..50 {
        if !addrs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        addrs = server.listen_addrs();
    }
    client.dial(server.peer_id(), addrs).await?;
    let out = dir.join("blobs");
    tokio::fs::create_dir_all(&out).await?;

    let t = Instant::now();
    let open = || async {
        let stream = client
            .control()
            .open_stream(server.peer_id(), image_protocol())
            .await
            .context("open an image stream")?;
        anyhow::Ok(ImageStream::new(stream))
    };
    let mut stream = open().await?;
    stream.write(&ImageMessage::Want { digest }).await?;
    let Some(ImageMessage::Have { blobs, .. }) = stream.read().await? else {
        bail!("the server did not answer Have");
    };
    let mut buf = vec![0u8; 256 * 1024];
    for (blob, size) in blobs {
        stream
            .write(&ImageMessage::Blob {
                digest: blob,
                offset: 0,
            })
            .await?;
        match stream.read().await? {
            Some(ImageMessage::BlobStart { size: s }) if s == size => {}
            other => bail!("unexpected answer {other:?}"),
        }
        let mut file = tokio::fs::File::create(out.join(&blob.to_string()[7..])).await?;
        let mut hasher = Sha256::new();
        let mut left = size;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = stream.read_raw(&mut buf[..want]).await?;
            if n == 0 {
                bail!("stream ended {left} bytes short");
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).await?;
            left -= n as u64;
        }
        file.flush().await?;
        if hasher.finalize().as_slice() != blob.0 {
            bail!("blob {blob} does not hash to its digest");
        }
    }
    let took = t.elapsed();
    stream.close().await;
    service.abort();
    client.shutdown().await;
    server.shutdown().await;
    Ok(took)
}
