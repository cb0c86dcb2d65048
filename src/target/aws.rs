//! Functions on AWS, through Lambda's Invoke API with aws-sdk-lambda.
//!
//! One client per region, built once from aws-config's default chains (environment, shared
//! profiles, web identity, ECS container credentials, EC2 IMDSv2), so an ECS task role works
//! and no request pays for client construction. Invocations are never retried: a retried
//! `RequestResponse` invoke can run a function twice, and API Gateway never retries either.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_lambda::Client;
use aws_sdk_lambda::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::operation::invoke::InvokeError;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use bytes::Bytes;
use tokio::time::Instant;

use super::{ErrorObject, TargetError};
use crate::config::{AwsConfig, DEFAULT_REGION};

/// How long the startup check waits for credentials (IMDS and ECS endpoints can be slow).
const CREDENTIALS_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AwsTarget {
    client: Client,
    function_name: String,
    qualifier: Option<String>,
}

impl AwsTarget {
    pub async fn invoke(&self, event: Bytes, deadline: Instant) -> Result<Bytes, TargetError> {
        let call = self
            .client
            .invoke()
            .function_name(&self.function_name)
            .set_qualifier(self.qualifier.clone())
            .invocation_type(InvocationType::RequestResponse)
            .payload(Blob::new(event))
            .send();
        let output = tokio::time::timeout_at(deadline, call)
            .await
            .map_err(|_| TargetError::Timeout)?
            .map_err(|e| classify(&e))?;
        let payload = output
            .payload
            .map(|blob| Bytes::from(blob.into_inner()))
            .unwrap_or_default();
        // Any X-Amz-Function-Error value means the function failed (Handled, Unhandled, …).
        if let Some(kind) = output.function_error {
            return Err(ErrorObject::parse(&payload).into_error(&kind, &payload));
        }
        Ok(payload)
    }
}

/// Turns an Invoke failure into what the client should be told, keeping the SDK's whole
/// error chain for the log.
fn classify(error: &SdkError<InvokeError>) -> TargetError {
    let detail = DisplayErrorContext(error).to_string();
    let refused = |kind| TargetError::InvokeRefused {
        kind,
        message: detail.clone(),
    };
    if chain_has::<CredentialsError>(error) {
        return refused("no-credentials");
    }
    match error {
        SdkError::TimeoutError(_) => TargetError::Timeout,
        SdkError::DispatchFailure(failure) if failure.is_timeout() => TargetError::Timeout,
        SdkError::DispatchFailure(failure) if failure.is_io() => TargetError::Unreachable(detail),
        SdkError::ServiceError(service) => match service.err() {
            InvokeError::TooManyRequestsException(_) => refused("throttled"),
            InvokeError::ResourceNotFoundException(_) => refused("function-not-found"),
            InvokeError::RequestTooLargeException(_) => TargetError::RequestTooLarge,
            other if other.code().is_some_and(is_access_denied) => refused("access-denied"),
            _ => refused("lambda-error"),
        },
        _ => TargetError::Transport(detail),
    }
}

fn is_access_denied(code: &str) -> bool {
    code.contains("AccessDenied")
        || code.contains("Signature")
        || code.contains("Token")
        || code == "UnrecognizedClientException"
}

fn chain_has<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<E>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// Builds one client per region, from one shared SDK configuration loaded at startup.
pub struct AwsClients {
    shared: SdkConfig,
    by_region: HashMap<String, Client>,
}

impl AwsClients {
    /// Loads the SDK configuration. The region is the file's `region`, else the SDK's region
    /// chain (`AWS_REGION`, profile, IMDS), else eu-central-1.
    pub async fn load(file_region: Option<&str>) -> Self {
        let region = match file_region {
            Some(region) => RegionProviderChain::first_try(Region::new(region.to_owned())),
            None => {
                RegionProviderChain::default_provider().or_else(Region::from_static(DEFAULT_REGION))
            }
        };
        let shared = aws_config::defaults(BehaviorVersion::v2026_01_12())
            .region(region)
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .load()
            .await;
        tokio::spawn(check_credentials(shared.clone()));
        AwsClients {
            shared,
            by_region: HashMap::new(),
        }
    }

    pub fn target(&mut self, config: &AwsConfig) -> AwsTarget {
        let shared = &self.shared;
        let region = config
            .region
            .clone()
            .or_else(|| shared.region().map(|r| r.to_string()))
            .unwrap_or_else(|| DEFAULT_REGION.to_owned());
        let client = self
            .by_region
            .entry(region.clone())
            .or_insert_with(|| {
                let config = aws_sdk_lambda::config::Builder::from(shared)
                    .region(Region::new(region))
                    .build();
                Client::from_conf(config)
            })
            .clone();
        AwsTarget {
            client,
            function_name: config.function_name.clone(),
            qualifier: config.qualifier.clone(),
        }
    }
}

/// Says at startup whether credentials resolve. lrp serves either way, so health checks pass
/// while, say, an ECS task role is still being attached.
async fn check_credentials(config: SdkConfig) {
    let Some(provider) = config.credentials_provider() else {
        tracing::warn!("no AWS credentials provider: aws: rules will answer 500 (no-credentials)");
        return;
    };
    match tokio::time::timeout(CREDENTIALS_CHECK_TIMEOUT, provider.provide_credentials()).await {
        Ok(Ok(_)) => tracing::info!(
            region = config.region().map(|r| r.to_string()),
            "AWS credentials resolved"
        ),
        Ok(Err(e)) => tracing::warn!(
            error = %DisplayErrorContext(&e),
            "AWS credentials cannot be resolved: aws: rules will answer 500 (no-credentials) until they can"
        ),
        Err(_) => tracing::warn!(
            "AWS credentials did not resolve within {CREDENTIALS_CHECK_TIMEOUT:?}: aws: rules may fail"
        ),
    }
}
