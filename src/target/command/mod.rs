//! Functions whose code lrp runs itself, as Lambda does: processes started on demand, each
//! served the Lambda Runtime API, one invocation at a time each, up to `concurrency` at once.

mod fast_path;
mod handoff;
mod instance;
mod quiet;
mod runtime_api;
mod small_reads;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use self::instance::{FunctionSpec, Instance};
use self::runtime_api::{Death, Outcome};
use super::admission::{Limiter, Slot, Ticket};
use super::stream::{Ending, ResultStream, StreamEnd};
use super::{Invoked, LogTail, TargetError};
use crate::config::CommandConfig;

/// How long a stopping runtime gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Restarts after failed initializations wait 1 s, 2 s, 4 s … up to this.
const MAX_INIT_BACKOFF: Duration = Duration::from_secs(30);

pub struct CommandTarget {
    pool: Arc<Pool>,
}

struct Pool {
    spec: FunctionSpec,
    limiter: Arc<Limiter>,
    idle: Mutex<Vec<Instance>>,
    next_instance: AtomicU64,
    init: Mutex<InitBackoff>,
}

#[derive(Default)]
struct InitBackoff {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<(String, String)>,
}

impl CommandTarget {
    pub fn new(config: &CommandConfig, region: &str, timeout: Duration) -> Self {
        let spec = FunctionSpec {
            name: config.function_name.clone(),
            command: config.command.clone(),
            working_dir: config.working_dir.clone(),
            env: lambda_environment(config, region, timeout),
            arn: format!(
                "arn:aws:lambda:{region}:000000000000:function:{}",
                config.function_name
            ),
        };
        let pool = Arc::new(Pool {
            spec,
            limiter: Limiter::new(config.concurrency, config.max_queue),
            idle: Mutex::new(Vec::new()),
            next_instance: AtomicU64::new(1),
            init: Mutex::new(InitBackoff::default()),
        });
        if let Some(idle_timeout) = config.idle_timeout {
            tokio::spawn(reap_idle(Arc::downgrade(&pool), idle_timeout));
        }
        CommandTarget { pool }
    }

    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.pool.limiter
    }

    pub async fn invoke(
        &self,
        ticket: Ticket,
        event: Bytes,
        deadline: Instant,
        trace_id: &str,
        log: Option<LogTail>,
    ) -> Result<Invoked, TargetError> {
        let pool = self.pool.clone();
        let trace_id = trace_id.to_owned();
        // A client that goes away cannot leave an instance half-way through an invocation: it
        // finishes, or is killed at the deadline (by `Pool::run`, whose timer is the only one).
        // A stream holds the slot until it ends.
        ticket
            .run_self_timed(deadline, |slot| async move {
                match pool.run(event, deadline, trace_id, log).await? {
                    Invoked::Streamed(mut stream) => {
                        stream.hold(slot);
                        Ok(Invoked::Streamed(stream))
                    }
                    buffered => Ok(buffered),
                }
            })
            .await
    }

    /// Stops every idle instance: SIGTERM, then SIGKILL after a grace period.
    pub async fn shutdown(&self) {
        let idle = match self.pool.idle.lock() {
            Ok(mut idle) => std::mem::take(&mut *idle),
            Err(_) => return,
        };
        let stops = idle.into_iter().map(|instance| instance.stop(STOP_GRACE));
        futures_util::future::join_all(stops).await;
    }
}

impl Pool {
    async fn run(
        self: &Arc<Self>,
        event: Bytes,
        deadline: Instant,
        trace_id: String,
        log: Option<LogTail>,
    ) -> Result<Invoked, TargetError> {
        let mut instance = self.checkout().await?;
        let fresh = instance.served == 0;
        let request_id = crate::ids::lambda_request_id();
        let started = Instant::now();
        if log.is_some() {
            instance.output.start(&request_id);
        }
        let invocation = instance.invoke(&request_id, event, deadline, trace_id);
        let outcome = tokio::time::timeout_at(deadline, invocation).await;
        instance.served += 1;
        if let Some(log) = log {
            let tail = instance.output.finish(&request_id, started.elapsed()).await;
            if let Ok(mut log) = log.lock() {
                *log = Some(tail);
            }
        }
        match outcome {
            Err(_) => {
                tracing::warn!(function = %self.spec.name, instance = instance.id,
                    "invocation timed out: stopping the instance");
                drop(instance);
                Err(TargetError::Timeout)
            }
            Ok(Ok(outcome)) => {
                if fresh {
                    self.init_succeeded();
                }
                let result = match outcome {
                    // The instance is busy until its stream ends.
                    Outcome::Stream {
                        content_type,
                        chunks,
                        done,
                    } => {
                        let end = Box::new(InstanceReturn {
                            pool: self.clone(),
                            instance,
                            done,
                        });
                        let stream = ResultStream::new(content_type, chunks, deadline, end);
                        return Ok(Invoked::Streamed(stream));
                    }
                    Outcome::Response(result) => Ok(Invoked::Buffered(result)),
                    Outcome::Error {
                        error_type,
                        message,
                    } => Err(TargetError::Function {
                        error_type,
                        message,
                    }),
                    Outcome::ResponseTooLarge => Err(TargetError::ResultTooLarge),
                };
                self.checkin(instance);
                result
            }
            Ok(Err(death)) => {
                let (error_type, message) = match death {
                    Death::InitError {
                        error_type,
                        message,
                    } => (error_type, message),
                    Death::Exited(message) => ("Runtime.ExitError".to_owned(), message),
                };
                if fresh {
                    self.init_failed(&error_type, &message);
                }
                Err(TargetError::Function {
                    error_type,
                    message,
                })
            }
        }
    }

    /// An idle, living instance, or a new one unless recent starts failed.
    async fn checkout(&self) -> Result<Instance, TargetError> {
        while let Some(instance) = self.take_idle() {
            if !instance.is_dead() {
                return Ok(instance);
            }
        }
        if let Ok(init) = self.init.lock()
            && let (Some(retry_at), Some((error_type, message))) = (init.retry_at, &init.last_error)
            && Instant::now() < retry_at
        {
            return Err(TargetError::Function {
                error_type: error_type.clone(),
                message: format!(
                    "{message} (the last start failed; retrying in {:.1} s)",
                    retry_at
                        .saturating_duration_since(Instant::now())
                        .as_secs_f64()
                ),
            });
        }
        let id = self.next_instance.fetch_add(1, Ordering::Relaxed);
        Instance::start(&self.spec, id).await.map_err(|e| {
            let message = format!("cannot start {:?}: {e}", self.spec.command);
            self.init_failed("Runtime.InvalidEntrypoint", &message);
            TargetError::Function {
                error_type: "Runtime.InvalidEntrypoint".into(),
                message,
            }
        })
    }

    /// The most recently idle instance whose Runtime API this worker serves, else the most
    /// recently idle one: an invocation handed to an instance of another worker crosses
    /// threads twice (to the runtime and back), which costs more than the invocation itself.
    fn take_idle(&self) -> Option<Instance> {
        let here = std::thread::current().id();
        let mut idle = self.idle.lock().ok()?;
        let index = idle
            .iter()
            .rposition(|instance| instance.home == here)
            .or_else(|| idle.len().checked_sub(1))?;
        Some(idle.remove(index))
    }

    fn checkin(&self, mut instance: Instance) {
        instance.idle_since = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(instance);
        }
    }

    fn init_failed(&self, error_type: &str, message: &str) {
        if let Ok(mut init) = self.init.lock() {
            init.failures += 1;
            let delay = Duration::from_secs(1 << init.failures.min(6).saturating_sub(1));
            let delay = delay.min(MAX_INIT_BACKOFF);
            init.retry_at = Some(Instant::now() + delay);
            init.last_error = Some((error_type.to_owned(), message.to_owned()));
            tracing::warn!(function = %self.spec.name, error_type, message,
                "the function failed to start; next attempt in {delay:?}");
        }
    }

    fn init_succeeded(&self) {
        if let Ok(mut init) = self.init.lock() {
            *init = InitBackoff::default();
        }
    }

    /// Takes out the instances idle for longer than `idle_timeout`.
    fn expired(&self, idle_timeout: Duration) -> Vec<Instance> {
        let Ok(mut idle) = self.idle.lock() else {
            return Vec::new();
        };
        let (expired, kept) = std::mem::take(&mut *idle)
            .into_iter()
            .partition(|i| i.idle_since.elapsed() >= idle_timeout || i.is_dead());
        *idle = kept;
        expired
    }
}

/// Gives a streaming instance back to its pool when its stream ends: once the runtime's
/// response is over (it is told to stop when the client went away), or killed when the stream
/// was cut with the runtime perhaps still writing.
struct InstanceReturn {
    pool: Arc<Pool>,
    instance: Instance,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl StreamEnd for InstanceReturn {
    fn end(self: Box<Self>, ending: Ending, slot: Option<Slot>) {
        let InstanceReturn {
            pool,
            instance,
            done,
        } = *self;
        if ending == Ending::Cut {
            tracing::warn!(function = %pool.spec.name, instance = instance.id,
                "a stream was cut: stopping the instance");
            drop(instance);
            return;
        }
        tokio::spawn(async move {
            // Its response must be over before it serves again; one that does not end soon
            // after its stream did is not waited for. The slot is freed after, so the next
            // request finds the instance back in the pool.
            match tokio::time::timeout(STOP_GRACE, done).await {
                Ok(_) => pool.checkin(instance),
                Err(_) => drop(instance),
            }
            drop(slot);
        });
    }
}

/// Stops instances nobody used for `idle_timeout`, until the pool is gone.
async fn reap_idle(pool: Weak<Pool>, idle_timeout: Duration) {
    let period = (idle_timeout / 2).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else { break };
        let expired = pool.expired(idle_timeout);
        if !expired.is_empty() {
            tracing::info!(function = %pool.spec.name, count = expired.len(),
                "stopping instances idle for {idle_timeout:?}");
        }
        drop(pool);
        for instance in expired {
            instance.stop(STOP_GRACE).await;
        }
    }
}

/// The variables Lambda sets for a function, then the rule's own.
fn lambda_environment(
    config: &CommandConfig,
    region: &str,
    timeout: Duration,
) -> Vec<(String, String)> {
    let name = &config.function_name;
    let mut env: Vec<(String, String)> = [
        ("AWS_LAMBDA_FUNCTION_NAME", name.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            config.memory_size.to_string(),
        ),
        (
            "AWS_LAMBDA_FUNCTION_TIMEOUT",
            timeout.as_secs().max(1).to_string(),
        ),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        ("AWS_REGION", region.to_owned()),
        ("AWS_DEFAULT_REGION", region.to_owned()),
        ("LAMBDA_TASK_ROOT", config.working_dir.display().to_string()),
        ("TZ", ":UTC".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(handler) = &config.handler {
        env.push(("_HANDLER".to_owned(), handler.clone()));
    }
    env.extend(config.env.iter().cloned());
    env
}
