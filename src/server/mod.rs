//! The server's lifecycle: the listener and its connection limit, each connection's idle and
//! keep-alive bounds, reloads, and the drain on shutdown. What happens to one request is in
//! [`pipeline`].

mod body;
mod pipeline;

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

use crate::config::Config;
use crate::event::Format;
use crate::metrics::{Metrics, RuleMetrics};
use crate::router::RouteTable;
use crate::target::aws::AwsTarget;
use crate::target::{Target, TargetFactory};

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight requests may run on after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2: a PING after this long without a frame, and the connection is closed if its answer
/// takes longer than [`HTTP2_PING_TIMEOUT`]: a peer that vanished without a FIN is noticed.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(20);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);
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
    internal_route_prefix: String,
    shutdown_delay: Duration,
}

impl Proxy {
    async fn new(config: &Config, metrics: &Metrics, targets: &mut TargetFactory) -> Self {
        let mut routes = Vec::with_capacity(config.rules.len());
        for rule in &config.rules {
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

    /// Serves until `shutdown` resolves. From then on `/healthz` answers 503; lrp keeps
    /// accepting for the configured `shutdown_delay` (so load balancers see it), then stops
    /// accepting, asks every connection to finish (HTTP/1.1 after its current response,
    /// HTTP/2 with GOAWAY), waits up to 30 s for them, and stops the functions it runs.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let local_port = listener.local_addr()?.port();
        let builder = Arc::new(connection_builder());
        let max_connections = self.state.max_connections;
        let connections = Arc::new(Semaphore::new(max_connections));
        let (stop_connections, stop) = watch::channel(false);
        let stop_accepting = async {
            shutdown.await;
            self.state.draining.store(true, Ordering::Release);
            let delay = self.state.proxy.load().shutdown_delay;
            info!("shutting down: /healthz now answers 503; accepting for {delay:?} more");
            tokio::time::sleep(delay).await;
        };
        tokio::pin!(stop_accepting);
        let mut warned_full = false;
        loop {
            // At the limit, lrp stops accepting: new clients wait in the kernel's backlog
            // until a connection closes, instead of each costing memory here.
            let permit = match connections.clone().try_acquire_owned() {
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
                        permit = connections.clone().acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => break,
                        },
                        () = &mut stop_accepting => break,
                    }
                }
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Running out of file descriptors must not end the server: wait, go on.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut stop_accepting => break,
            };
            if connections.available_permits() > 0 {
                warned_full = false;
            }
            let connection = Connection {
                state: self.state.clone(),
                builder: builder.clone(),
                peer,
                local_port,
                _permit: permit,
            };
            tokio::spawn(connection.serve(stream, stop.clone()));
        }
        drop(listener);
        info!("draining in-flight requests");
        let _ = stop_connections.send(true);
        let all_closed = connections.acquire_many(max_connections as u32);
        if tokio::time::timeout(DRAIN_TIMEOUT, all_closed)
            .await
            .is_err()
        {
            error!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}; stopping anyway");
        }
        self.state.proxy.load().shutdown().await;
        Ok(())
    }
}

/// HTTP/1.1 and HTTP/2 (prior knowledge, h2c) on the same port, with their time bounds.
fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper ignores its timeouts without a timer (and panics if one is set without it).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
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
            let (state, activity) = (self.state.clone(), activity.clone());
            let (peer, local_port) = (self.peer, self.local_port);
            service_fn(move |request| {
                let state = state.clone();
                let busy = activity.begin();
                async move {
                    let response = pipeline::handle(&state, peer, local_port, request).await;
                    drop(busy);
                    Ok::<_, Infallible>(response)
                }
            })
        };
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

/// Whether a connection has requests in flight, and since when it has had none.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `opened` to the end of the last request.
    last_done_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
        }
    }

    /// Counts a request as in flight until the guard is dropped.
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Resolves once the connection has had no request in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            if self.in_flight.load(Ordering::Acquire) > 0 {
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
