//! The ways lrp invokes a function, behind one interface: event bytes in, result bytes out.

pub mod rie;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::config::TargetConfig;

/// Why an invocation produced no usable result.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("no result within the rule's timeout")]
    Timeout,
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
    /// `aws:` rules are parsed and validated, but cannot be invoked by this build.
    AwsUnavailable,
}

impl Target {
    pub async fn invoke(&self, event: Bytes, timeout: Duration) -> Result<Bytes, TargetError> {
        match self {
            Target::Rie(target) => target.invoke(event, timeout).await,
            Target::AwsUnavailable => Err(TargetError::Unsupported(
                "aws: rules are not supported by this build of lrp yet",
            )),
        }
    }
}

/// Builds targets from rules, sharing what rules may share: one HTTP client for every local
/// endpoint, and one concurrency limit per endpoint however many hostnames point at it.
pub struct TargetFactory {
    rie_client: rie::RieClient,
    rie_slots: HashMap<String, Arc<Semaphore>>,
}

impl TargetFactory {
    pub fn new() -> Self {
        TargetFactory {
            rie_client: rie::client(),
            rie_slots: HashMap::new(),
        }
    }

    pub fn build(&mut self, config: &TargetConfig) -> Target {
        match config {
            TargetConfig::Rie(rie) => {
                let slots = self
                    .rie_slots
                    .entry(rie.invoke_uri.to_string())
                    .or_insert_with(|| Arc::new(Semaphore::new(rie.concurrency)))
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

impl Default for TargetFactory {
    fn default() -> Self {
        Self::new()
    }
}
