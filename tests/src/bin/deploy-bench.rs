//! `deploy-bench`: how long `peerctl deploy` takes to give a URL that answers, how long
//! `peerctl stop` takes to withdraw it, and how much memory the idle provider daemon holds —
//! with the real release programs, a real Docker engine, QUIC and TLS.
//!
//! ```text
//! cargo run --release -p peercompute-tests --bin deploy-bench              # 10 runs
//! cargo run --release -p peercompute-tests --bin deploy-bench -- --runs 3 --busybox
//! ```
//!
//! It builds (or finds) the release `peercompute-gateway`, `peercomputed` and `peerctl`,
//! starts gateway and provider as child processes on 127.0.0.1 with trust added both ways by
//! `peerctl peers add`, and uses the demo image `peercompute-demo:local` when it exists, else
//! a busybox web image `FROM scratch` it loads itself. Then, per run: the same container
//! started directly (the baseline), `peerctl deploy … --json` until the printed URL answers
//! 200 through the gateway, and `peerctl stop` until it answers 404. It prints the machine,
//! median/min/max of each figure, the ratios to the baseline, PASS/MISS against the issue's
//! targets (deploy-to-URL ≤ 1.5 s median, provider idle RSS ≤ 30 MiB), and where the time
//! goes, stage by stage, from the programs' own log timestamps and the engine's events.
//!
//! Exit codes: 0 measured (whatever the verdict), 1 could not run, 2 the system misbehaved (a
//! deploy or stop failed, a wrong answer, a container left behind), 130 interrupted.
//! Children are killed and containers removed on every path out.

mod deploy_bench;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use deploy_bench::children::Binaries;
use deploy_bench::machine;
use deploy_bench::report::Report;
use deploy_bench::runs::{self, CheckFailed, Workload};
use deploy_bench::stages;
use deploy_bench::system::System;
use deploy_bench::timeline::Timeline;
use peercompute_runtime::testsupport::{Cleanup, unique_name};
use peercompute_runtime::{ContainerSpec, DockerRuntime, LABEL_PROVIDER};

/// The demo app's image, used when it exists (see `docker/`).
const DEMO_IMAGE: &str = "peercompute-demo:local";

#[derive(Parser, Debug)]
#[command(
    name = "deploy-bench",
    about = "Benchmark of Peer Compute deploys: peerctl deploy → URL answering, stop → 404, provider idle memory"
)]
struct Cli {
    /// Measured runs (each: direct start, deploy, stop).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    runs: u16,
    /// Runs before the measured ones, not counted.
    #[arg(long, default_value_t = 1)]
    warmup: u16,
    /// Deploy this local image instead [default: peercompute-demo:local if present, else a
    /// busybox web image built here].
    #[arg(long)]
    image: Option<String>,
    /// Deploy the busybox web image built here even when peercompute-demo:local exists.
    #[arg(long, conflicts_with = "image")]
    busybox: bool,
    /// The port the --image listens on.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Take the three binaries from this directory instead of building.
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Do not run `cargo build --release`; use the binaries already in target/release.
    #[arg(long)]
    no_build: bool,
    /// Keep the homes and the children's logs in DIR (default: a temporary directory,
    /// removed at the end).
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("deploy-bench: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        tokio::select! {
            r = bench(cli) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    match result {
        Some(Ok(report)) => {
            report.print();
            ExitCode::SUCCESS
        }
        Some(Err(e)) => {
            eprintln!("deploy-bench: {e:#}");
            if e.downcast_ref::<CheckFailed>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
        None => {
            eprintln!("deploy-bench: interrupted; children killed, containers removed");
            ExitCode::from(130)
        }
    }
}

async fn bench(cli: Cli) -> anyhow::Result<Report> {
    let machine = machine::machine();
    let load_before = machine::loadavg();
    let bins = Binaries::get(cli.bin_dir.as_deref(), cli.no_build)?;
    let runtime = DockerRuntime::connect()
        .await
        .context("this benchmark needs a Docker engine (DOCKER_HOST or the default socket)")?;
    let docker = bollard::Docker::connect_with_defaults().context("connect to the engine")?;
    let docker_version = docker
        .version()
        .await
        .ok()
        .and_then(|v| v.version)
        .unwrap_or_else(|| "unknown".into());

    let temp = tempfile::Builder::new()
        .prefix("deploy-bench-")
        .tempdir()
        .context("create a work directory")?;
    let work = match &cli.keep {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            dir.clone()
        }
        None => temp.path().to_path_buf(),
    };
    let (workload, image, _image_guard) = workload(&cli, &docker).await?;
    // Dropped after the system (declared before it): removes our containers once the
    // children are dead, and before the image guard removes a loaded image.
    let containers = Cleanup::new();
    let timeline = Timeline::default();
    let mut system = System::start(&bins, &work, &timeline).await?;
    let direct_label = unique_name("deploy-bench-direct");
    containers.containers_labelled(LABEL_PROVIDER, &system.provider_id);
    containers.containers_labelled(LABEL_PROVIDER, &direct_label);
    let events = timeline.record_docker_events(
        docker,
        vec![system.provider_id.clone(), direct_label.clone()],
    );
    let rss_start = machine::memory_of(system.provider.pid).context("the provider's memory")?;

    let measured = measure(
        &mut system,
        &runtime,
        &workload,
        &direct_label,
        &cli,
        &timeline,
    )
    .await;
    let measured = match measured {
        Ok(m) => m,
        Err(e) => {
            eprintln!("the children's last log lines:\n{}", system.log_tails());
            system.stop().await;
            events.abort();
            return Err(e);
        }
    };
    let rss_end = machine::memory_of(system.provider.pid).context("the provider's memory")?;
    let mut image_check = Vec::new();
    for _ in 0..cli.runs {
        let t0 = Instant::now();
        runtime
            .ensure_image(&workload.image, |_| {})
            .await
            .context("image check")?;
        image_check.push(t0.elapsed());
    }
    system.stop().await;
    events.abort();
    if cli.keep.is_some() {
        eprintln!("homes and logs kept in {}", work.display());
    }
    Ok(Report {
        machine,
        load_before,
        load_after: machine::loadavg(),
        docker_version,
        binaries: bins.how,
        image,
        runs: usize::from(cli.runs),
        warmup: usize::from(cli.warmup),
        deploy: measured.deploy,
        deploy_exit: measured.deploy_exit,
        direct: measured.direct,
        direct_stop: measured.direct_stop,
        stop: measured.stop,
        stop_exit: measured.stop_exit,
        image_check,
        rss_start,
        rss_end,
        deploy_stages: stages::table(&measured.deploy_milestones),
        stop_stages: stages::table(&measured.stop_milestones),
        direct_stages: stages::table(&measured.direct_milestones),
        timeline_dropped: timeline.dropped(),
    })
}

/// The figures of the measured runs (warm-up runs left out).
#[derive(Debug, Default)]
struct Measured {
    deploy: Vec<Duration>,
    deploy_exit: Vec<Duration>,
    direct: Vec<Duration>,
    direct_stop: Vec<Duration>,
    stop: Vec<Duration>,
    stop_exit: Vec<Duration>,
    deploy_milestones: Vec<stages::Milestones>,
    stop_milestones: Vec<stages::Milestones>,
    direct_milestones: Vec<stages::Milestones>,
}

async fn measure(
    system: &mut System,
    runtime: &DockerRuntime,
    workload: &Workload,
    direct_label: &str,
    cli: &Cli,
    timeline: &Timeline,
) -> anyhow::Result<Measured> {
    let mut done = Vec::new();
    let total = cli.warmup + cli.runs;
    for i in 0..total {
        system.check_running()?;
        let counted = i >= cli.warmup;
        let spec = ContainerSpec {
            deployment_id: format!("direct{i}"),
            provider: direct_label.to_owned(),
            owner: system.client_id.clone(),
            name: format!("direct-{i}"),
            image: workload.image.clone(),
            port: workload.port,
            env: Vec::new(),
            cpu_millis: peercompute_provider::DEFAULT_CPU_MILLIS,
            memory_bytes: peercompute_provider::DEFAULT_MEMORY_BYTES,
            attach: Default::default(),
        };
        let direct = runs::direct(runtime, workload, &spec).await?;
        let mut deployed = runs::deploy(system, workload, &format!("bench-{i}")).await?;
        let stopped = runs::stop(system, runtime, &mut deployed).await?;
        eprintln!(
            "{} {}/{total}: direct start {:.3} s, deploy-to-URL {:.3} s (peerctl {:.3} s), stop {:.3} s",
            if counted { "run" } else { "warm-up" },
            i + 1,
            direct.to_200.as_secs_f64(),
            deployed.to_url.as_secs_f64(),
            deployed.peerctl_exit.as_secs_f64(),
            stopped.to_404.as_secs_f64()
        );
        if counted {
            done.push((spec.container_name(), direct, deployed, stopped));
        }
    }
    // The engine's events and the daemons' lines may arrive a moment after a run ended:
    // wait (bounded) for the last run's last event before reading the stages.
    if let Some((_, _, last, _)) = done.last() {
        let prefix = format!("destroy peercompute-{}-", last.name);
        timeline
            .wait_for(Duration::from_secs(5), |e| e.text.starts_with(&prefix))
            .await;
    }
    let mut m = Measured::default();
    for (container, direct, deployed, stopped) in &done {
        m.direct.push(direct.to_200);
        m.direct_stop.push(direct.stop);
        m.deploy.push(deployed.to_url);
        m.deploy_exit.push(deployed.peerctl_exit);
        m.stop.push(stopped.to_404);
        m.stop_exit.push(stopped.peerctl_exit);
        m.direct_milestones
            .push(stages::direct(timeline, container, direct));
        m.deploy_milestones
            .push(stages::deploy(timeline, &system.provider_id, deployed));
        m.stop_milestones.push(stages::stop(
            timeline,
            &system.provider_id,
            deployed,
            stopped,
        ));
    }
    let out = system
        .peerctl_output(
            &["ls", "--peer", &system.provider_id, "--json"],
            "peerctl ls",
        )
        .await?;
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    if !out.status.success() || listed.as_array().is_none_or(|a| !a.is_empty()) {
        return Err(CheckFailed(format!(
            "after the runs `peerctl ls` shows deployments or failed: {} {}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
        .into());
    }
    Ok(m)
}

/// The image to deploy, its description, and the guard that removes it if we loaded it.
async fn workload(
    cli: &Cli,
    docker: &bollard::Docker,
) -> anyhow::Result<(Workload, String, Option<peercompute_tests::TestImage>)> {
    let local = |image: String| async move {
        match docker.inspect_image(&image).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(anyhow::Error::from(e).context(format!("inspect image {image}"))),
        }
    };
    if let Some(image) = &cli.image {
        if !local(image.clone()).await? {
            anyhow::bail!("image {image} is not on this host: build or pull it first");
        }
        let workload = Workload {
            image: image.clone(),
            port: cli.port,
            body: None,
        };
        return Ok((
            workload,
            format!("{image} (--image), port {}", cli.port),
            None,
        ));
    }
    if !cli.busybox && local(DEMO_IMAGE.to_owned()).await? {
        let workload = Workload {
            image: DEMO_IMAGE.to_owned(),
            port: 8080,
            body: None,
        };
        let text = format!("{DEMO_IMAGE} (the demo app, found locally), port 8080");
        return Ok((workload, text, None));
    }
    // The e2e harness's image; it panics on failure, so check what it needs first.
    peercompute_runtime::testsupport::busybox()?;
    let loaded = peercompute_tests::TestImage::load().await;
    let workload = Workload {
        image: loaded.tag.clone(),
        port: peercompute_tests::TEST_PORT,
        body: Some("hello from the container\n".to_owned()),
    };
    let text = format!(
        "{} (busybox httpd FROM scratch, loaded by this run{}); port {}",
        loaded.tag,
        if cli.busybox {
            ", --busybox".to_owned()
        } else {
            format!(": no {DEMO_IMAGE} here")
        },
        peercompute_tests::TEST_PORT
    );
    Ok((workload, text, Some(loaded)))
}
