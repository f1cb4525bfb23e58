//! `fcfs-runner`: serves template.yaml locally (see the crate docs). Its endpoints come from the
//! environment (`.local/env` after `make up`), like every function's.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use local_runner::{LocalApp, RunnerConfig};

/// The runner serves many small requests at once; glibc's allocator showed as a quarter of its
/// profile (`bench/analysis.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "fcfs-runner",
    version,
    about = "Serve template.yaml's API, authorizer, SQS event sources and schedules locally"
)]
struct Args {
    #[arg(long, default_value = "template.yaml")]
    template: PathBuf,
    /// Serve without the template's throttling (the stage's and each partner's rate): for load
    /// tests that send more than one partner may on AWS.
    #[arg(long)]
    no_throttle: bool,
    /// Template parameter override, NAME=VALUE (repeatable). Stage defaults to $FCFS_STAGE.
    #[arg(long = "param", value_parser = fcfs_template::parse_param)]
    params: Vec<(String, String)>,
    #[arg(long, env = "FCFS_API_HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    #[arg(long, env = "FCFS_API_PORT", default_value_t = 3000)]
    port: u16,
    /// Invoke this function's schedule once now, print what it returned on stdout and exit,
    /// without serving (logs go to stderr).
    #[arg(long, value_name = "FunctionLogicalId")]
    invoke: Option<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.invoke.is_some() {
        fcfs_shared::config::init_tracing_to(std::io::stderr);
    } else {
        fcfs_shared::config::init_tracing();
    }
    let config = RunnerConfig {
        template: args.template,
        params: args.params.into_iter().collect(),
        env: std::env::vars().collect::<BTreeMap<_, _>>(),
        throttle: !args.no_throttle,
    };
    let app = LocalApp::load(&config).await.context("cannot start the local runner")?;
    if let Some(function) = &args.invoke {
        let result = app.invoke_schedule(function).await?;
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(());
    }
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    for route in &app.routes {
        tracing::info!(
            method = route.method,
            path = route.path,
            function = route.function,
            "route"
        );
    }
    for source in &app.sources {
        tracing::info!(
            function = source.function,
            queue = source.queue_url,
            batch_size = source.batch_size,
            window_secs = source.batching_window.as_secs(),
            concurrency = source.max_concurrency,
            "event source"
        );
    }
    for schedule in &app.schedules {
        tracing::info!(
            function = schedule.function,
            schedule = schedule.name,
            expression = schedule.expression,
            rate_secs = schedule.rate.as_secs_f64(),
            enabled = schedule.enabled,
            "schedule"
        );
    }
    tracing::info!(url = %format!("http://{addr}"), "serving");
    app.serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// Ctrl-C or SIGTERM (what `make down` sends).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
