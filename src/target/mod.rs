//! The ways lrp invokes a function, behind one interface: event bytes in, result bytes out.

pub mod aws;
pub mod command;
pub mod rie;
mod slots;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use self::slots::Slots;
use crate::config::{DEFAULT_REGION, TargetConfig};

/// Why an invocation produced no usable result.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("no result within the rule's timeout")]
    Timeout,
    #[error("too many invocations are already waiting for this function")]
    QueueFull,
    #[error("the function failed: {error_type}: {message}")]
    Function { error_type: String, message: String },
    #[error("the function timed out: {0}")]
    FunctionTimeout(String),
    #[error("the endpoint refused the invocation with status {status}: {body}")]
    Rejected { status: u16, body: String },
    #[error("the function's result is larger than Lambda's 6 MB limit")]
    ResultTooLarge,
    #[error("Lambda refused the request as too large")]
    RequestTooLarge,
    #[error("Lambda refused the invocation: {message}")]
    InvokeRefused { kind: &'static str, message: String },
    #[error("the endpoint is unreachable: {0}")]
    Unreachable(String),
    #[error("the invocation failed in transit: {0}")]
    Transport(String),
}

impl TargetError {
    pub fn kind(&self) -> &'static str {
        match self {
            TargetError::Timeout => "timeout",
            TargetError::QueueFull => "queue-full",
            TargetError::Function { .. } => "function-error",
            TargetError::FunctionTimeout(_) => "function-timeout",
            TargetError::Rejected { .. } => "invoke-rejected",
            TargetError::ResultTooLarge => "result-too-large",
            TargetError::RequestTooLarge => "request-too-large",
            TargetError::InvokeRefused { kind, .. } => kind,
            TargetError::Unreachable(_) => "unreachable",
            TargetError::Transport(_) => "transport",
        }
    }
}

/// Lambda's longest function timeout: how long an abandoned invocation may still run.
const ABANDONED_INVOCATION_LIMIT: Duration = Duration::from_secs(15 * 60);

/// Runs an invocation in place, and if it is dropped unfinished (the client went away, or its
/// deadline passed) lets it finish on a task of its own, at most [`ABANDONED_INVOCATION_LIMIT`].
/// The invocation holds its concurrency slot, so the slot stays taken until the function is
/// really done: an RIE would refuse a second invoke meanwhile (the real one crashes), and a
/// command instance must not be lost half-way. Unlike spawning every invocation, the common
/// path costs no task and no cross-thread wake-up.
struct FinishOnDrop<F: Future + Send + 'static>
where
    F::Output: Send,
{
    future: Option<Pin<Box<F>>>,
}

impl<F: Future + Send + 'static> FinishOnDrop<F>
where
    F::Output: Send,
{
    fn new(future: F) -> Self {
        FinishOnDrop {
            future: Some(Box::pin(future)),
        }
    }
}

impl<F: Future + Send + 'static> Future for FinishOnDrop<F>
where
    F::Output: Send,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(future) = self.future.as_mut() else {
            return Poll::Pending;
        };
        let output = std::task::ready!(future.as_mut().poll(cx));
        self.future = None;
        Poll::Ready(output)
    }
}

impl<F: Future + Send + 'static> Drop for FinishOnDrop<F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        if let (Some(future), Ok(runtime)) =
            (self.future.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(tokio::time::timeout(ABANDONED_INVOCATION_LIMIT, future));
        }
    }
}

/// The `{"errorType": …, "errorMessage": …}` object runtimes describe failures with.
#[derive(Debug, Default, Deserialize)]
struct ErrorObject {
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    #[serde(rename = "errorMessage")]
    error_message: Option<String>,
    /// Present when a result merely carries such fields as data.
    #[serde(rename = "statusCode")]
    status_code: Option<serde::de::IgnoredAny>,
}

impl ErrorObject {
    /// The fields of `body`, all absent when it is not such an object.
    fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// The error's type (else `fallback_type`) and message (else the start of `body`).
    fn describe(self, fallback_type: &str, body: &[u8]) -> (String, String) {
        (
            self.error_type.unwrap_or_else(|| fallback_type.to_owned()),
            self.error_message.unwrap_or_else(|| excerpt(body)),
        )
    }

    fn into_error(self, fallback_type: &str, body: &[u8]) -> TargetError {
        let (error_type, message) = self.describe(fallback_type, body);
        TargetError::Function {
            error_type,
            message,
        }
    }
}

/// The start of a body, as text for a log line.
fn excerpt(body: &[u8]) -> String {
    const SHOWN: usize = 512;
    String::from_utf8_lossy(&body[..body.len().min(SHOWN)]).into_owned()
}

pub enum Target {
    Rie(Box<rie::RieTarget>),
    Command(command::CommandTarget),
    Aws(aws::AwsTarget),
}

impl Target {
    /// Invokes the function with `event`, for at most `timeout`; `trace_id` is the request's
    /// X-Ray trace header, for targets that pass one on.
    pub async fn invoke(
        &self,
        event: Bytes,
        timeout: Duration,
        trace_id: &str,
    ) -> Result<Bytes, TargetError> {
        match self {
            Target::Rie(target) => target.invoke(event, timeout).await,
            Target::Command(target) => target.invoke(event, timeout, trace_id).await,
            Target::Aws(target) => target.invoke(event, timeout).await,
        }
    }

    /// Invocations waiting for a free slot.
    pub fn waiting(&self) -> usize {
        match self {
            Target::Rie(target) => target.waiting(),
            Target::Command(target) => target.waiting(),
            Target::Aws(_) => 0,
        }
    }

    /// Stops what the target runs itself; in-flight invocations have drained by then.
    pub async fn shutdown(&self) {
        if let Target::Command(target) = self {
            target.shutdown().await;
        }
    }
}

/// Builds targets from rules, sharing what rules may share: one HTTP client for every local
/// endpoint, one concurrency limit per endpoint however many hostnames point at it, and one
/// AWS client per region. It lives as long as the server, so a reload keeps them: an
/// invocation still running on the old rule table holds the same endpoint slot the new
/// table uses, and an RIE never sees two invocations at once.
pub struct TargetFactory {
    rie_client: rie::RieClient,
    rie_slots: HashMap<String, Arc<Slots>>,
    /// Loaded with the first `aws:` rule (a file without one does no AWS SDK work at all),
    /// for the file `region` it was loaded with.
    aws: Option<(Option<String>, aws::AwsClients)>,
}

impl TargetFactory {
    pub fn new() -> Self {
        TargetFactory {
            rie_client: rie::client(),
            rie_slots: HashMap::new(),
            aws: None,
        }
    }

    /// The target for one rule. `file_region` is the configuration file's `region`.
    pub async fn build(
        &mut self,
        config: &TargetConfig,
        timeout: Duration,
        file_region: Option<&str>,
    ) -> Target {
        match config {
            TargetConfig::Command(command) => {
                let region = file_region.unwrap_or(DEFAULT_REGION);
                Target::Command(command::CommandTarget::new(command, region, timeout))
            }
            TargetConfig::Rie(rie) => {
                let limits = (rie.concurrency, rie.max_queue);
                let slots = self
                    .rie_slots
                    .entry(rie.invoke_uri.to_string())
                    .and_modify(|slots| {
                        if slots.limits() != limits {
                            *slots = Arc::new(Slots::new(limits.0, limits.1));
                        }
                    })
                    .or_insert_with(|| Arc::new(Slots::new(limits.0, limits.1)))
                    .clone();
                Target::Rie(Box::new(rie::RieTarget::new(
                    self.rie_client.clone(),
                    rie.invoke_uri.clone(),
                    slots,
                )))
            }
            TargetConfig::Aws(config) => {
                let region = file_region.map(str::to_owned);
                let clients = match &mut self.aws {
                    Some((loaded_for, clients)) if *loaded_for == region => clients,
                    _ => {
                        let clients = aws::AwsClients::load(file_region).await;
                        &mut self.aws.insert((region, clients)).1
                    }
                };
                Target::Aws(clients.target(config))
            }
        }
    }
}

impl Default for TargetFactory {
    fn default() -> Self {
        Self::new()
    }
}
