//! The server's lifecycle: the listener and its connection limit, each connection's idle and
//! keep-alive bounds, reloads, and the drain on shutdown. What happens to one request is in
//! [`pipeline`].

mod body;
mod head_timeout;
mod lambda_api;
pub mod listen;
mod pipeline;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::coalesced_writes::CoalescedWrites;
use crate::config::Config;
use crate::event::{self, Format};
use crate::memory;
use crate::metrics::{Metrics, RuleMetrics};
use crate::router::RouteTable;
use crate::target::aws::AwsTarget;
use crate::target::{Target, TargetFactory};

/// How long a worker waits before it tries again an `accept` that failed (out of file
/// descriptors: one may free at any moment, and the kernel holds the client meanwhile).
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// How long in-flight requests may run on after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2: a PING after this long without a frame, and the connection is closed if its answer
/// takes longer than [`HTTP2_PING_TIMEOUT`]: a peer that vanished without a FIN is noticed.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(20);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Invoke API `Event` invocations that may wait or run at once; more get 429.
const MAX_QUEUED_EVENTS: usize = 1000;
/// HTTP/2 streams one connection may have open at once (each is a request in flight).
const HTTP2_MAX_STREAMS: u32 = 128;

/// One rule, ready to serve.
pub struct Route {
    /// The hostname as configured, for logs and metrics.
    pub name: String,
    pub target: Target,
    pub timeout: Duration,
    /// The event the function receives, and whose answers the client gets.
    pub format: Format,
    /// A path prefix the function does not see (`strip_path_prefix`).
    pub strip_prefix: Option<String>,
    /// Where requests go when the local function's queue is full or it is unreachable.
    pub overflow: Option<OverflowTarget>,
    metrics: RuleMetrics,
}

/// The names a rule's function answers to on the Invoke API: a command's `function_name`; an
/// endpoint's function name in its invoke path, and when that is the RIE's `function`, also
/// its hostname's first label; an `aws:` rule's function name (without an ARN's prefix or a
/// qualifier).
fn invoke_names(rule: &crate::config::Rule) -> Vec<String> {
    use crate::config::{DEFAULT_RIE_FUNCTION_NAME, TargetConfig};
    match &rule.target {
        TargetConfig::Command(command) => vec![command.function_name.clone()],
        TargetConfig::Rie(rie) => {
            let name = rie.function_name().to_owned();
            let host = rule.route.host.as_ref().map(|h| h.function_name());
            match host {
                Some(host) if name == DEFAULT_RIE_FUNCTION_NAME => vec![name, host],
                _ => vec![name],
            }
        }
        TargetConfig::Aws(aws) => {
            vec![lambda_api::function_and_qualifier(&aws.function_name, None).0]
        }
    }
}

/// A function on AWS that takes a local rule's overflow.
pub struct OverflowTarget {
    pub target: AwsTarget,
    /// How long an overflowing request may take on AWS; the rule's remaining time if unset.
    pub timeout: Option<Duration>,
}

impl OverflowTarget {
    /// Invokes the overflow function, within its own timeout if it has one, else by the
    /// request's `deadline`.
    pub async fn invoke(
        &self,
        event: bytes::Bytes,
        deadline: Instant,
    ) -> Result<crate::target::Invoked, crate::target::TargetError> {
        let deadline = self.timeout.map_or(deadline, |t| Instant::now() + t);
        self.target.invoke(event, deadline).await
    }
}

/// The rule table and the settings that come with it: what a reload replaces.
pub struct Proxy {
    table: RouteTable<Route>,
    /// Function name → its rule's index in `table`, for the Invoke API.
    functions: HashMap<String, usize>,
    internal_route_prefix: String,
    shutdown_delay: Duration,
}

impl Proxy {
    async fn new(config: &Config, metrics: &Metrics, targets: &mut TargetFactory) -> Self {
        let mut routes = Vec::with_capacity(config.rules.len());
        let mut functions = HashMap::new();
        for (index, rule) in config.rules.iter().enumerate() {
            for name in invoke_names(rule) {
                // The first rule for a name answers for it.
                functions.entry(name).or_insert(index);
            }
            let name = rule.route.to_string();
            let route = Route {
                metrics: metrics.rule(&name),
                name,
                target: targets
                    .build(&rule.target, rule.timeout, config.region.as_deref())
                    .await,
                timeout: rule.timeout,
                format: rule.event.clone(),
                strip_prefix: rule
                    .route
                    .path_prefix
                    .clone()
                    .filter(|_| rule.strip_path_prefix),
                overflow: match &rule.overflow {
                    Some(overflow) => Some(OverflowTarget {
                        target: targets
                            .aws(&overflow.function, config.region.as_deref())
                            .await,
                        timeout: overflow.timeout,
                    }),
                    None => None,
                },
            };
            routes.push((rule.route.clone(), route));
        }
        Proxy {
            table: RouteTable::new(routes),
            functions,
            internal_route_prefix: config.internal_route_prefix.clone(),
            shutdown_delay: config.shutdown_delay,
        }
    }

    /// Stops what the targets run themselves.
    async fn shutdown(&self) {
        for route in self.table.routes() {
            route.target.shutdown().await;
        }
    }
}

/// A running lrp: the current rule table, its metrics, and whether it is shutting down.
/// Clones share the same server, so one can serve while another reloads.
#[derive(Clone)]
pub struct Server {
    state: Arc<State>,
}

struct State {
    proxy: ArcSwap<Proxy>,
    metrics: Metrics,
    draining: AtomicBool,
    /// Kept across reloads (see [`TargetFactory`]); locked only while a table is built.
    targets: tokio::sync::Mutex<TargetFactory>,
    /// Invoke API `Event` invocations accepted and not yet finished.
    async_invocations: Arc<Semaphore>,
    /// Fixed at startup, like the listen address.
    max_connections: usize,
    connection_idle_timeout: Duration,
}

impl Server {
    /// Builds every target; call it inside the Tokio runtime (command targets start tasks).
    pub async fn new(config: &Config) -> Self {
        let metrics = Metrics::new();
        let mut targets = TargetFactory::new();
        let proxy = Proxy::new(config, &metrics, &mut targets).await;
        Server {
            state: Arc::new(State {
                proxy: ArcSwap::from_pointee(proxy),
                metrics,
                draining: AtomicBool::new(false),
                targets: tokio::sync::Mutex::new(targets),
                async_invocations: Arc::new(Semaphore::new(MAX_QUEUED_EVENTS)),
                max_connections: config.max_connections,
                connection_idle_timeout: config.connection_idle_timeout,
            }),
        }
    }

    /// Swaps in the rules of an already validated `config`. Requests in flight finish on the
    /// table they started with; that table's functions stop once the last of them is done.
    pub async fn reload(&self, config: &Config) {
        let proxy = {
            let mut targets = self.state.targets.lock().await;
            Proxy::new(config, &self.state.metrics, &mut targets).await
        };
        let old = self.state.proxy.swap(Arc::new(proxy));
        tokio::spawn(async move {
            let retired = Instant::now();
            while Arc::strong_count(&old) > 1 && retired.elapsed() < DRAIN_TIMEOUT {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            old.shutdown().await;
        });
    }

    /// Serves until `shutdown` resolves: HTTP on `http`, and the Lambda Invoke API on
    /// `lambda_api` if it has sockets. Each worker thread takes one socket of each (see
    /// [`listen`]) and serves its connections on a single-threaded runtime of its own; this
    /// thread is the first worker. From the shutdown on `/healthz` answers 503; lrp keeps
    /// accepting for the configured `shutdown_delay` (so load balancers see it), then stops
    /// accepting, asks every connection to finish (HTTP/1.1 after its current response,
    /// HTTP/2 with GOAWAY), waits up to 30 s for them, and stops the functions it runs.
    pub async fn serve(
        &self,
        http: Vec<std::net::TcpListener>,
        lambda_api: Vec<std::net::TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let max_connections = self.state.max_connections;
        let shared = Arc::new(Accepting {
            builder: Arc::new(connection_builder()),
            connections: Arc::new(Semaphore::new(max_connections)),
            stop_accepting: watch::channel(false),
            stop_connections: watch::channel(false),
        });
        let mut lambda_api = lambda_api.into_iter();
        let mut sockets = http.into_iter().map(|http| (http, lambda_api.next()));
        let (first_http, first_api) = sockets.next().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no socket to serve on")
        })?;
        // The other workers run until the functions have stopped: their runtimes drive
        // connections, and tasks of the functions' instances they started.
        let (functions_stopped, stopped) = watch::channel(false);
        let mut workers = Vec::new();
        for (index, (http, api)) in sockets.enumerate() {
            let (server, shared, stopped) = (self.clone(), shared.clone(), stopped.clone());
            let worker = std::thread::Builder::new()
                .name(format!("lrp-worker-{}", index + 1))
                .spawn(move || {
                    worker_runtime()?.block_on(server.work(http, api, &shared, stopped))
                })?;
            workers.push(worker);
        }
        let signal = async {
            shutdown.await;
            self.state.draining.store(true, Ordering::Release);
            let delay = self.state.proxy.load().shutdown_delay;
            info!("shutting down: /healthz now answers 503; accepting for {delay:?} more");
            tokio::time::sleep(delay).await;
            let _ = shared.stop_accepting.0.send(true);
        };
        let (_, accepted) = tokio::join!(signal, self.accept_all(first_http, first_api, &shared));
        info!("draining in-flight requests");
        let _ = shared.stop_connections.0.send(true);
        let all_closed = shared.connections.acquire_many(max_connections as u32);
        if tokio::time::timeout(DRAIN_TIMEOUT, all_closed)
            .await
            .is_err()
        {
            error!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}; stopping anyway");
        }
        self.state.proxy.load().shutdown().await;
        let _ = functions_stopped.send(true);
        let mut outcome = accepted;
        for worker in workers {
            let ended = tokio::task::spawn_blocking(move || worker.join()).await;
            let worker_outcome = match ended {
                Ok(Ok(worker_outcome)) => worker_outcome,
                _ => Err(std::io::Error::other("a worker thread panicked")),
            };
            outcome = outcome.and(worker_outcome);
        }
        outcome
    }

    /// One worker thread's share: accepts on its sockets until told to stop, then keeps its
    /// runtime going until the functions have stopped.
    async fn work(
        self,
        http: std::net::TcpListener,
        lambda_api: Option<std::net::TcpListener>,
        shared: &Accepting,
        mut functions_stopped: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let accepted = self.accept_all(http, lambda_api, shared).await;
        let _ = functions_stopped.wait_for(|stopped| *stopped).await;
        accepted
    }

    /// Accepts on one worker's sockets until told to stop.
    async fn accept_all(
        &self,
        http: std::net::TcpListener,
        lambda_api: Option<std::net::TcpListener>,
        shared: &Accepting,
    ) -> std::io::Result<()> {
        // This worker's connections look at their own copy of the stop signal each time they
        // are polled: the shared one would bounce its cache line between cores.
        let (stop, stop_here) = watch::channel(false);
        let mut stop_everywhere = shared.stop_connections.1.clone();
        tokio::spawn(async move {
            let _ = stop_everywhere.wait_for(|stop| *stop).await;
            let _ = stop.send(true);
        });
        // On this worker's runtime, so on this thread, as the collection must be.
        tokio::spawn(memory::collect_when_quiet());
        let api = async {
            match lambda_api {
                Some(listener) => {
                    let listener = TcpListener::from_std(listener)?;
                    self.accept(listener, Service::LambdaApi, shared, &stop_here)
                        .await
                }
                None => Ok(()),
            }
        };
        let http = async {
            let listener = TcpListener::from_std(http)?;
            self.accept(listener, Service::Http, shared, &stop_here)
                .await
        };
        let (http, api) = tokio::join!(http, api);
        http.and(api)
    }

    /// Accepts connections for `service` until told to stop; `stop_connections` tells them
    /// to finish.
    async fn accept(
        &self,
        listener: TcpListener,
        service: Service,
        shared: &Accepting,
        stop_connections: &watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let local_port = listener.local_addr()?.port();
        let mut stop = shared.stop_accepting.1.clone();
        let max_connections = self.state.max_connections;
        let mut warned_full = false;
        let mut accept_failing = false;
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Running out of file descriptors must not end the server: wait, go on.
                        // Said once until an accept succeeds, not at every retry.
                        if !accept_failing {
                            warn!(error = %e, "accept failed: retrying every 50 ms");
                            accept_failing = true;
                        }
                        tokio::time::sleep(ACCEPT_RETRY).await;
                        continue;
                    }
                },
                _ = stop.wait_for(|stop| *stop) => break,
            };
            if accept_failing {
                info!("accepting connections again");
                accept_failing = false;
            }
            // At the limit, this worker holds the connection it has just accepted unserved,
            // and accepts no more: new clients wait in the kernel's backlog until a connection
            // closes, instead of each costing memory here. The place is taken after `accept`,
            // not before: each worker has a backlog of its own, and a place given to a worker
            // whose backlog is empty would leave another worker's clients waiting.
            let permit = match shared.connections.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    if !warned_full {
                        warn!(
                            max_connections,
                            "max_connections reached: not accepting until a connection closes"
                        );
                        warned_full = true;
                    }
                    tokio::select! {
                        permit = shared.connections.clone().acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => break,
                        },
                        _ = stop.wait_for(|stop| *stop) => break,
                    }
                }
            };
            if shared.connections.available_permits() > 0 {
                warned_full = false;
            }
            let connection = Connection {
                state: self.state.clone(),
                builder: shared.builder.clone(),
                service,
                peer,
                local_port,
                _permit: permit,
            };
            tokio::spawn(connection.serve(stream, stop_connections.clone()));
        }
        Ok(())
    }
}

/// A worker's runtime: one thread, which writes the access lines it holds soon after it has
/// nothing else to do.
pub fn worker_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(crate::access_log::on_idle)
        .build()
}

/// What the accept loops share: the connection limit, and the signals to stop.
struct Accepting {
    builder: Arc<auto::Builder<TokioExecutor>>,
    connections: Arc<Semaphore>,
    stop_accepting: (watch::Sender<bool>, watch::Receiver<bool>),
    stop_connections: (watch::Sender<bool>, watch::Receiver<bool>),
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    /// Functions over HTTP, by host and path.
    Http,
    /// The Lambda Invoke API, by function name.
    LambdaApi,
}

/// HTTP/1.1 and HTTP/2 (prior knowledge, h2c) on the same port, with their time bounds.
fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Request heads are bounded by `HeadTimeout` instead (see there why).
    builder.http1().header_read_timeout(None);
    // hyper ignores its timeouts without a timer (and panics if one is set without it).
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_PING_INTERVAL)
        .keep_alive_timeout(HTTP2_PING_TIMEOUT)
        .max_concurrent_streams(HTTP2_MAX_STREAMS);
    builder
}

/// One client connection, holding its place under `max_connections` until it closes.
struct Connection {
    state: Arc<State>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: Service,
    peer: std::net::SocketAddr,
    local_port: u16,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    /// Serves requests until the client closes, the connection sits idle for
    /// `connection_idle_timeout`, or the server stops (`stop` turns true); the last two
    /// close it gracefully, after the responses in flight.
    async fn serve(self, stream: TcpStream, mut stop: watch::Receiver<bool>) {
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let _open = self.state.metrics.connection_opened();
        let activity = Arc::new(Activity::new());
        let service = {
            // One handle per connection, cloned per request: cloning the shared `State`
            // instead would bounce its reference count between the workers' cores.
            let served = Arc::new((
                self.state.clone(),
                event::Connection::new(self.peer.ip(), self.local_port),
            ));
            let (activity, kind) = (activity.clone(), self.service);
            service_fn(move |request| {
                let served = served.clone();
                let busy = activity.begin();
                async move {
                    let (state, connection) = &*served;
                    let response = match kind {
                        Service::Http => pipeline::handle(state, connection, request).await,
                        Service::LambdaApi => lambda_api::handle(state, request).await,
                    };
                    drop(busy);
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let (read, write) = stream.into_split();
        let stream = tokio::io::join(
            head_timeout::HeadTimeout::new(read, activity.clone()),
            CoalescedWrites::new(write),
        );
        let connection = self.builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let idle_timeout = self.state.connection_idle_timeout;
        let mut closing = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        debug!(error = %e, peer = %self.peer, "connection ended with an error");
                    }
                    break;
                }
                _ = stop.wait_for(|stop| *stop), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = activity.idle_for(idle_timeout), if !closing => {
                    debug!(peer = %self.peer, "closing a connection idle for {idle_timeout:?}");
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Whether a connection has requests in flight, since when it has had none, and how many
/// have begun.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    begun: AtomicU64,
    /// Milliseconds from `opened` to the end of the last request.
    last_done_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            begun: AtomicU64::new(0),
            last_done_ms: AtomicU64::new(0),
        }
    }

    /// Counts a request as in flight until the guard is dropped.
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.begun.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    fn begun(&self) -> u64 {
        self.begun.load(Ordering::Acquire)
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Resolves once the connection has had no request in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            if self.busy() {
                tokio::time::sleep(limit).await;
                continue;
            }
            let last_done = Duration::from_millis(self.last_done_ms.load(Ordering::Acquire));
            let idle_until = self.opened + last_done + limit;
            if Instant::now() >= idle_until {
                return;
            }
            tokio::time::sleep_until(idle_until).await;
        }
    }
}

struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        let done = u64::try_from(activity.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.last_done_ms.store(done, Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_without_requests_in_flight() {
        let activity = Arc::new(Activity::new());
        let limit = Duration::from_secs(60);
        let busy = activity.begin();
        let idle = tokio::time::timeout(Duration::from_secs(600), activity.idle_for(limit));
        assert!(idle.await.is_err(), "a request in flight keeps it open");
        drop(busy);
        let done = Instant::now();
        activity.idle_for(limit).await;
        assert_eq!(
            done.elapsed(),
            limit,
            "idle from the end of the last request"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_is_idle_after_the_limit() {
        let activity = Activity::new();
        let opened = Instant::now();
        activity.idle_for(Duration::from_secs(5)).await;
        assert_eq!(opened.elapsed(), Duration::from_secs(5));
    }
}
