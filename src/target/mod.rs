//! The ways lrp invokes a function, behind one interface: event bytes in, result bytes out.

pub mod command;
pub mod rie;
mod slots;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use self::slots::Slots;
use crate::config::TargetConfig;

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
    #[error("the endpoint is unreachable: {0}")]
    Unreachable(String),
    #[error("the invocation failed in transit: {0}")]
    Transport(String),
    #[error("{0}")]
    Unsupported(&'static str),
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
            TargetError::Unreachable(_) => "unreachable",
            TargetError::Transport(_) => "transport",
            TargetError::Unsupported(_) => "unsupported-target",
        }
    }
}

pub enum Target {
    Rie(Box<rie::RieTarget>),
    Command(command::CommandTarget),
    /// `aws:` rules are parsed and validated, but cannot be invoked by this build.
    AwsUnavailable,
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
            Target::AwsUnavailable => Err(TargetError::Unsupported(
                "aws: rules are not supported by this build of lrp yet",
            )),
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
/// endpoint, and one concurrency limit per endpoint however many hostnames point at it.
pub struct TargetFactory {
    region: String,
    rie_client: rie::RieClient,
    rie_slots: HashMap<String, Arc<Slots>>,
}

impl TargetFactory {
    /// `region` is the one functions lrp runs itself are told they run in.
    pub fn new(region: &str) -> Self {
        TargetFactory {
            region: region.to_owned(),
            rie_client: rie::client(),
            rie_slots: HashMap::new(),
        }
    }

    pub fn build(&mut self, config: &TargetConfig, timeout: Duration) -> Target {
        match config {
            TargetConfig::Command(command) => {
                Target::Command(command::CommandTarget::new(command, &self.region, timeout))
            }
            TargetConfig::Rie(rie) => {
                let slots = self
                    .rie_slots
                    .entry(rie.invoke_uri.to_string())
                    .or_insert_with(|| Arc::new(Slots::new(rie.concurrency, rie.max_queue)))
                    .clone();
                Target::Rie(Box::new(rie::RieTarget::new(
                    self.rie_client.clone(),
                    rie.invoke_uri.clone(),
                    slots,
                )))
            }
            TargetConfig::Aws(_) => Target::AwsUnavailable,
        }
    }
}
