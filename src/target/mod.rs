//! The ways lrp invokes a function, behind one interface: event bytes in, result bytes out.

mod admission;
pub mod aws;
pub mod command;
pub mod rie;
pub mod stream;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use tokio::time::Instant;

pub use self::admission::{Limiter, Ticket};
use crate::config::{DEFAULT_REGION, TargetConfig};
use crate::memory;

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
            self.error_type
                .map_or_else(|| fallback_type.to_owned(), |t| cut(t, SHOWN_ERROR_TYPE)),
            self.error_message
                .map_or_else(|| excerpt(body), |m| cut(m, SHOWN_TEXT)),
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

/// How much of a function's text (an error message, a refused body) reaches a log line: a
/// function can send megabytes of it.
const SHOWN_TEXT: usize = 512;
const SHOWN_ERROR_TYPE: usize = 128;

/// The start of a body, as text for a log line.
fn excerpt(body: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(&body[..body.len().min(SHOWN_TEXT)]).into_owned();
    if body.len() > SHOWN_TEXT {
        text.push_str(" […]");
    }
    text
}

/// `text` cut to at most `limit` bytes, on a character boundary, marked when cut.
fn cut(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let end = text.floor_char_boundary(limit);
        text.truncate(end);
        text.push_str(" […]");
    }
    text
}

pub enum Target {
    Rie(Box<rie::RieTarget>),
    Command(command::CommandTarget),
    Aws(aws::AwsTarget),
}

impl Target {
    /// A place in the function's line, refused at once when the line is full. The server
    /// takes it before reading the request body, so a refused request costs nothing.
    pub fn admit(&self) -> Result<Admitted<'_>, TargetError> {
        Ok(match self {
            Target::Rie(target) => Admitted::Rie(target, target.limiter().admit()?),
            Target::Command(target) => Admitted::Command(target, target.limiter().admit()?),
            Target::Aws(target) => Admitted::Aws(target),
        })
    }

    /// `(queued, running)`: invocations admitted that do not run yet, and those holding a
    /// slot (abandoned ones that still run included).
    pub fn admission(&self) -> (usize, usize) {
        let limiter = match self {
            Target::Rie(target) => target.limiter(),
            Target::Command(target) => target.limiter(),
            Target::Aws(_) => return (0, 0),
        };
        (limiter.queued(), limiter.running())
    }

    /// Stops what the target runs itself; in-flight invocations have drained by then.
    pub async fn shutdown(&self) {
        if let Target::Command(target) = self {
            target.shutdown().await;
        }
    }
}

/// Where an invocation's log goes when the caller asked for it (the Invoke API's
/// `X-Amz-Log-Type: Tail`): filled by targets that run the function themselves.
pub type LogTail = std::sync::Arc<std::sync::Mutex<Option<String>>>;

/// A function's answer: whole, or streaming.
pub enum Invoked {
    Buffered(Bytes),
    Streamed(stream::ResultStream),
}

/// A request admitted to its function, ready to invoke once its event is built.
pub enum Admitted<'a> {
    Rie(&'a rie::RieTarget, Ticket),
    Command(&'a command::CommandTarget, Ticket),
    /// Lambda applies its own limits (429 `TooManyRequestsException`).
    Aws(&'a aws::AwsTarget),
}

impl Admitted<'_> {
    /// Invokes the function with `event`, all before `deadline`; `trace_id` is the
    /// request's X-Ray trace header, for targets that pass one on.
    pub async fn invoke(
        self,
        event: Bytes,
        deadline: Instant,
        trace_id: &str,
    ) -> Result<Invoked, TargetError> {
        self.invoke_logged(event, deadline, trace_id, None).await
    }

    /// [`Admitted::invoke`], filling `log` with the invocation's log where the target has it
    /// (functions lrp runs itself).
    pub async fn invoke_logged(
        self,
        event: Bytes,
        deadline: Instant,
        trace_id: &str,
        log: Option<LogTail>,
    ) -> Result<Invoked, TargetError> {
        let _work = memory::Work::begin();
        match self {
            Admitted::Rie(target, ticket) => target
                .invoke(ticket, event, deadline)
                .await
                .map(Invoked::Buffered),
            Admitted::Command(target, ticket) => {
                target.invoke(ticket, event, deadline, trace_id, log).await
            }
            Admitted::Aws(target) => target.invoke(event, deadline).await,
        }
    }
}

/// Builds targets from rules, sharing what rules may share: one [`Limiter`] per endpoint
/// however many hostnames point at it, and one AWS client per region. (Connections to
/// endpoints belong to the worker threads: see `rie::pool`.) It lives as long as the server,
/// so a reload keeps them: an invocation still running on the old rule table holds a slot of
/// the same limiter the new table uses (a reload that changes the limits changes them in
/// place), and an RIE never sees more invocations at once than its `concurrency`.
pub struct TargetFactory {
    rie_limiters: HashMap<String, Arc<Limiter>>,
    /// Loaded with the first `aws:` rule (a file without one does no AWS SDK work at all),
    /// for the file `region` it was loaded with.
    aws: Option<(Option<String>, aws::AwsClients)>,
}

impl TargetFactory {
    pub fn new() -> Self {
        TargetFactory {
            rie_limiters: HashMap::new(),
            aws: None,
        }
    }

    /// The target for one rule. `file_region` is the configuration file's `region`.
    pub async fn build(
        &mut self,
        config: &TargetConfig,
        timeout: std::time::Duration,
        file_region: Option<&str>,
    ) -> Target {
        match config {
            TargetConfig::Command(command) => {
                let region = file_region.unwrap_or(DEFAULT_REGION);
                Target::Command(command::CommandTarget::new(command, region, timeout))
            }
            TargetConfig::Rie(rie) => {
                let limiter = self
                    .rie_limiters
                    .entry(rie.invoke_uri.to_string())
                    .or_insert_with(|| Limiter::new(rie.concurrency, rie.max_queue));
                if limiter.limits() != (rie.concurrency, rie.max_queue) {
                    limiter.set_limits(rie.concurrency, rie.max_queue);
                }
                Target::Rie(Box::new(rie::RieTarget::new(
                    &rie.invoke_uri,
                    limiter.clone(),
                )))
            }
            TargetConfig::Aws(config) => Target::Aws(self.aws(config, file_region).await),
        }
    }

    /// A target for a function on AWS, on the shared client for its region.
    pub async fn aws(
        &mut self,
        config: &crate::config::AwsConfig,
        file_region: Option<&str>,
    ) -> aws::AwsTarget {
        let region = file_region.map(str::to_owned);
        let clients = match &mut self.aws {
            Some((loaded_for, clients)) if *loaded_for == region => clients,
            _ => {
                let clients = aws::AwsClients::load(file_region).await;
                &mut self.aws.insert((region, clients)).1
            }
        };
        clients.target(config)
    }
}

impl Default for TargetFactory {
    fn default() -> Self {
        Self::new()
    }
}
