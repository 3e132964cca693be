//! `keymint`: the operator binary. CLI, telemetry and wiring only; the work is
//! in the library (`keymint::controller`, `keymint::keys`, `keymint::api`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use keymint::controller::runner::{self, Scope};
use keymint::controller::{Context, Metrics, Settings};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

#[derive(Parser)]
#[command(
    name = "keymint",
    version,
    about = "Mints API keys into Kubernetes Secrets and rotates them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: boxing the arguments would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (RootKey, ServiceAccountKey, APIKey) as YAML.
    Crd,
    /// Run the operator.
    Run(RunArgs),
    /// Serve key verification (JSON and forward-auth) over a key ring from a mounted file or its Secret.
    Verify(VerifyArgs),
    /// Hold a key and send it to a verify server at a steady rate, counting the answers (the end-to-end rotation proof).
    #[command(hide = true)]
    Hold(HoldArgs),
}

#[derive(clap::Args)]
struct HoldArgs {
    /// The verify server's JSON endpoint, e.g. http://10.0.0.10:8081/v1/verify.
    #[arg(long)]
    url: String,
    /// Environment variable holding the key (read once, at start).
    #[arg(long, default_value = "KEYMINT_KEY")]
    key_env: String,
    /// Verifications per second.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..=1000))]
    rate: u32,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Kubeconfig file; without it, $KUBECONFIG, ~/.kube/config or the in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Namespaces whose ServiceAccountKeys and APIKeys are reconciled (repeat or comma-separate); all when empty.
    #[arg(
        long = "watch-namespace",
        env = "KEYMINT_WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    watch_namespaces: Vec<String>,
    /// The namespace the operator runs in (RootKey Secrets and the leader Lease go here by default).
    #[arg(long, env = "POD_NAMESPACE", default_value = "keymint-system")]
    operator_namespace: String,
    /// Namespaces RootKey Secrets may be written to; default: the operator's namespace.
    #[arg(long, env = "KEYMINT_ROOT_KEY_NAMESPACES", value_delimiter = ',')]
    root_key_namespaces: Vec<String>,
    /// Secret in the operator namespace holding the key that signs keymint's records in Secrets (created if missing).
    #[arg(
        long,
        env = "KEYMINT_RECORD_KEY_SECRET",
        default_value = keymint::controller::record_key::DEFAULT_SECRET_NAME
    )]
    record_key_secret: String,
    /// Log format.
    #[arg(long, env = "KEYMINT_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `keymint=debug`.
    #[arg(long, env = "KEYMINT_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "KEYMINT_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    metrics_address: SocketAddr,
    /// Elect a leader through a coordination.k8s.io Lease so only one replica writes.
    #[arg(long, env = "KEYMINT_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "keymint-leader")]
    lease_name: String,
    /// Seconds a leader's Lease stays valid without renewal (the longest hand-over after a crash).
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// Most consumer workloads (spec.consumers) of one namespace keymint rolls out at once; others wait their turn.
    #[arg(
        long,
        env = "KEYMINT_MAX_ROLLOUTS_PER_NAMESPACE",
        default_value_t = 4,
        value_parser = clap::value_parser!(u16).range(1..=1000)
    )]
    max_rollouts_per_namespace: u16,
    /// Keys whose renewal falls at the same time rotate at points spread over up to this long before it (Go-style duration, e.g. 10m; 0s: off; at most half of a key's renewBefore; keys with a validFor only).
    #[arg(long, env = "KEYMINT_ROTATION_SPREAD", default_value = "0s", value_parser = parse_spread)]
    rotation_spread: Duration,
    /// Scheduled rotations started per second, at most; a key whose renewal time has come rotates regardless.
    #[arg(
        long,
        env = "KEYMINT_MAX_ROTATIONS_PER_SECOND",
        default_value_t = 50,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    max_rotations_per_second: u32,
}

fn parse_spread(text: &str) -> Result<Duration, String> {
    keymint::keys::parse_duration(text).map_err(|error| error.to_string())
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// The ring document file (a mounted ring Secret's `keyring.json`), re-read when it changes.
    #[arg(
        long,
        env = "KEYMINT_KEYRING_FILE",
        required_unless_present_any = ["keyring_secret", "floor"],
        conflicts_with = "keyring_secret"
    )]
    keyring_file: Option<PathBuf>,
    /// The ring Secret to watch (data key `keyring.json`); needs get/list/watch on it.
    #[arg(long, env = "KEYMINT_KEYRING_SECRET")]
    keyring_secret: Option<String>,
    /// Namespace of --keyring-secret; default: $POD_NAMESPACE, the in-cluster namespace, or the kubeconfig's.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// Kubeconfig file for --keyring-secret; without it, $KUBECONFIG, ~/.kube/config or the in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Address of /v1/verify, /v1/forward-auth, /healthz, /readyz and /metrics.
    #[arg(long, env = "KEYMINT_VERIFY_LISTEN", default_value = "0.0.0.0:8081")]
    listen: SocketAddr,
    /// How often --keyring-file is checked for changes, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    poll_interval_ms: u64,
    /// Log format.
    #[arg(long, env = "KEYMINT_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `keymint=debug`.
    #[arg(long, env = "KEYMINT_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Benchmark floor: answer every POST /v1/verify with a fixed VALID, no ring.
    #[arg(long, hide = true)]
    floor: bool,
}

/// Where the in-cluster service account's namespace is mounted.
const IN_CLUSTER_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match keymint::api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("keymint: cannot render the CRDs: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            keymint::telemetry::init(args.log_format.into(), &args.log_level);
            block_on(run(args))
        }
        Command::Verify(args) => {
            keymint::telemetry::init(args.log_format.into(), &args.log_level);
            block_on(verify(args))
        }
        Command::Hold(args) => block_on(hold(args)),
    }
}

async fn hold(args: HoldArgs) -> Result<(), String> {
    let key = zeroize::Zeroizing::new(
        std::env::var(&args.key_env)
            .map_err(|_| format!("--key-env: ${} is not set", args.key_env))?,
    );
    let stop = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    let tally = keymint::holder::hold(&args.url, key, args.rate, stop).await?;
    let line = serde_json::to_string(&tally).map_err(|e| e.to_string())?;
    println!("{line}");
    // Outside a container there is no termination log: stdout is enough.
    let _ = std::fs::write(keymint::holder::TERMINATION_LOG, &line);
    Ok(())
}

impl From<LogFormat> for keymint::telemetry::LogFormat {
    fn from(format: LogFormat) -> Self {
        match format {
            LogFormat::Text => keymint::telemetry::LogFormat::Text,
            LogFormat::Json => keymint::telemetry::LogFormat::Json,
        }
    }
}

fn block_on(work: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("keymint: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn client(kubeconfig: Option<&PathBuf>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes configuration found: {e}"))?,
    };
    kube::Client::try_from(config).map_err(|e| format!("cannot create the Kubernetes client: {e}"))
}

async fn run(args: RunArgs) -> Result<(), String> {
    let client = client(args.kubeconfig.as_ref()).await?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let (stop, shutdown) = watch::channel(false);

    let server = tokio::spawn(keymint::server::serve(
        args.metrics_address,
        metrics.clone(),
        ready.clone(),
        shutdown.clone(),
    ));
    let signals = tokio::spawn(stop_on_signal(stop.clone()));

    let root_key_namespaces = if args.root_key_namespaces.is_empty() {
        vec![args.operator_namespace.clone()]
    } else {
        args.root_key_namespaces.clone()
    };
    let settings = Settings {
        operator_namespace: args.operator_namespace.clone(),
        root_key_namespaces,
        max_rollouts_per_namespace: usize::from(args.max_rollouts_per_namespace),
        rotation_spread: args.rotation_spread,
        max_rotations_per_second: args.max_rotations_per_second,
    };
    let scope = if args.watch_namespaces.is_empty() {
        Scope::AllNamespaces
    } else {
        Scope::Namespaces(args.watch_namespaces.clone())
    };
    let signing_key = keymint::controller::record_key::load_or_create(
        &client,
        &args.operator_namespace,
        &args.record_key_secret,
    )
    .await?;
    let ctx = Arc::new(Context::new(client.clone(), metrics, settings, signing_key));
    ready.store(true, Ordering::Relaxed);

    let outcome = if args.leader_elect {
        run_as_leader(&args, client, ctx, scope, stop.clone(), shutdown.clone()).await
    } else {
        info!("leader election off: reconciling");
        runner::run(ctx, scope, shutdown.clone()).await;
        Ok(())
    };
    let _ = stop.send(true);
    signals.abort();
    debug!("waiting for the metrics server to stop");
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => warn!(%error, "metrics server failed"),
        Err(error) => warn!(%error, "metrics server task failed"),
    }
    info!("stopped");
    outcome
}

/// Waits for the Lease, reconciles while holding it, and stops (with an error,
/// so the pod restarts as a follower) if it is lost: two replicas never both write.
async fn run_as_leader(
    args: &RunArgs,
    client: kube::Client,
    ctx: Arc<Context>,
    scope: Scope,
    stop: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let identity =
        std::env::var("POD_NAME").unwrap_or_else(|_| format!("keymint-{}", std::process::id()));
    let manager = LeaseManagerBuilder::new(client, &args.lease_name)
        .with_namespace(&args.operator_namespace)
        .with_identity(&identity)
        .with_duration(args.lease_duration)
        .with_grace(args.lease_duration.div_ceil(3).max(1))
        .build()
        .await
        .map_err(|e| format!("leader election: {e}"))?;
    let (mut leader, lease_task) = manager.watch().await;
    info!(lease = %args.lease_name, namespace = %args.operator_namespace, %identity, "waiting to become the leader");
    loop {
        if *leader.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leader.changed() => if changed.is_err() { return Err("leader election stopped".into()) },
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
        }
    }
    info!(%identity, "became the leader: reconciling");
    let controllers = tokio::spawn(runner::run(ctx, scope, shutdown.clone()));
    let lost = tokio::select! {
        _ = async { while leader.changed().await.is_ok() { if !*leader.borrow() { break } } } => true,
        _ = shutdown.wait_for(|stop| *stop) => false,
    };
    let _ = stop.send(true);
    let _ = controllers.await;
    drop(leader);
    // Hand the Lease over at once on a clean stop.
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(manager))) => {
            if let Err(error) = manager.release().await {
                warn!(%error, "cannot release the Lease");
            }
        }
        other => warn!(?other, "lease manager did not stop cleanly"),
    }
    if lost {
        Err("lost the leader Lease; stopping so that only the new leader writes".into())
    } else {
        Ok(())
    }
}

async fn verify(args: VerifyArgs) -> Result<(), String> {
    use keymint::verify::{Publisher, VerifyMetrics, http, source};
    let (stop, shutdown) = watch::channel(false);
    let signals = tokio::spawn(stop_on_signal(stop.clone()));
    if args.floor {
        let served = http::serve(args.listen, http::floor_router(), shutdown).await;
        signals.abort();
        return served.map_err(|e| format!("verify server on {}: {e}", args.listen));
    }
    let metrics = Arc::new(VerifyMetrics::default());
    let (publisher, ring) = Publisher::new(metrics.clone());
    let loader = match (&args.keyring_file, &args.keyring_secret) {
        (Some(path), _) => {
            info!(path = %path.display(), "file mode: polling the key ring file");
            tokio::spawn(source::poll_file(
                path.clone(),
                Duration::from_millis(args.poll_interval_ms),
                publisher,
                shutdown.clone(),
            ))
        }
        (None, Some(name)) => {
            let client = client(args.kubeconfig.as_ref()).await?;
            let namespace = match &args.namespace {
                Some(namespace) => namespace.clone(),
                None => std::fs::read_to_string(IN_CLUSTER_NAMESPACE)
                    .ok()
                    .map(|text| text.trim().to_string())
                    .filter(|text| !text.is_empty())
                    .unwrap_or_else(|| client.default_namespace().to_string()),
            };
            info!(%namespace, secret = %name, "watch mode: watching the key ring Secret");
            tokio::spawn(source::watch_secret(
                client,
                namespace,
                name.clone(),
                publisher,
                shutdown.clone(),
            ))
        }
        (None, None) => return Err("give --keyring-file or --keyring-secret".into()),
    };
    let served = http::serve(args.listen, http::router(ring, metrics), shutdown).await;
    let _ = stop.send(true);
    signals.abort();
    if let Err(error) = loader.await {
        warn!(%error, "the key ring loader failed");
    }
    info!("stopped");
    served.map_err(|e| format!("verify server on {}: {e}", args.listen))
}

async fn stop_on_signal(stop: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    info!("signal received: shutting down");
    let _ = stop.send(true);
}
