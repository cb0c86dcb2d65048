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
use aws_sdk_lambda::config::http::HttpResponse;
use aws_sdk_lambda::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::primitives::event_stream::EventReceiver;
use aws_sdk_lambda::types::error::InvokeWithResponseStreamResponseEventError;
use aws_sdk_lambda::types::{InvocationType, InvokeWithResponseStreamResponseEvent};
use bytes::Bytes;
use tokio::time::Instant;

use super::admission::Slot;
use super::stream::{ChunkSender, Ending, ResultStream, StreamEnd, StreamError};
use super::{ErrorObject, Invoked, TargetError};
use crate::config::{AwsConfig, DEFAULT_REGION};

/// How long the startup check waits for credentials (IMDS and ECS endpoints can be slow).
const CREDENTIALS_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AwsTarget {
    client: Client,
    function_name: String,
    qualifier: Option<String>,
    /// `InvokeWithResponseStream` instead of `Invoke`.
    response_stream: bool,
}

impl AwsTarget {
    pub async fn invoke(&self, event: Bytes, deadline: Instant) -> Result<Invoked, TargetError> {
        if self.response_stream {
            self.invoke_streaming(event, deadline).await
        } else {
            self.invoke_buffered(event, deadline)
                .await
                .map(Invoked::Buffered)
        }
    }

    async fn invoke_buffered(&self, event: Bytes, deadline: Instant) -> Result<Bytes, TargetError> {
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

/// `InvokeWithResponseStream`: the payload chunks are handed on as they arrive, through the
/// same bounded stream a `command` rule's response takes; an `InvokeComplete` event with an
/// `ErrorCode` ends it as a function error mid-stream.
impl AwsTarget {
    async fn invoke_streaming(
        &self,
        event: Bytes,
        deadline: Instant,
    ) -> Result<Invoked, TargetError> {
        let call = self
            .client
            .invoke_with_response_stream()
            .function_name(&self.function_name)
            .set_qualifier(self.qualifier.clone())
            .payload(Blob::new(event))
            .send();
        let output = tokio::time::timeout_at(deadline, call)
            .await
            .map_err(|_| TargetError::Timeout)?
            .map_err(|e| classify(&e))?;
        let content_type = output.response_stream_content_type.clone();
        let (sender, chunks) = ChunkSender::channel(deadline);
        tokio::spawn(pump(output.event_stream, sender));
        let stream = ResultStream::new(content_type, chunks, deadline, Box::new(NothingHeld));
        Ok(Invoked::Streamed(stream))
    }
}

/// Hands each payload chunk on until the stream completes, fails, passes the size limit, or
/// nobody reads it any more (the client went away: dropping the receiver closes the call).
async fn pump(
    mut events: EventReceiver<
        InvokeWithResponseStreamResponseEvent,
        InvokeWithResponseStreamResponseEventError,
    >,
    mut sender: ChunkSender,
) {
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            () = sender.closed() => return,
        };
        match event {
            Ok(None) => return,
            Ok(Some(InvokeWithResponseStreamResponseEvent::PayloadChunk(update))) => {
                let chunk = update.payload.map(|p| Bytes::from(p.into_inner()));
                if !sender.send(chunk.unwrap_or_default()).await {
                    return;
                }
            }
            Ok(Some(InvokeWithResponseStreamResponseEvent::InvokeComplete(complete))) => {
                let Some(error_type) = complete.error_code else {
                    return;
                };
                let details = complete.error_details.unwrap_or_default();
                let (error_type, message) = ErrorObject::parse(details.as_bytes())
                    .describe(&error_type, details.as_bytes());
                let failure = StreamError::Function {
                    error_type,
                    message,
                };
                return sender.fail(failure).await;
            }
            Ok(Some(_)) => continue,
            Err(e) => {
                tracing::warn!(error = %DisplayErrorContext(&e), "a response stream from Lambda broke off");
                return sender.fail(StreamError::Broken).await;
            }
        }
    }
}

/// A stream from Lambda holds nothing of lrp's: no slot, no instance.
struct NothingHeld;

impl StreamEnd for NothingHeld {
    fn end(self: Box<Self>, _ending: Ending, _slot: Option<Slot>) {}
}

/// Turns an Invoke or InvokeWithResponseStream failure into what the client should be told,
/// keeping the SDK's whole error chain for the log.
fn classify<E>(error: &SdkError<E, HttpResponse>) -> TargetError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
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
        SdkError::ServiceError(service) => match service.err().code() {
            Some("TooManyRequestsException") => refused("throttled"),
            Some("ResourceNotFoundException") => refused("function-not-found"),
            Some("RequestTooLargeException") => TargetError::RequestTooLarge,
            Some(code) if is_access_denied(code) => refused("access-denied"),
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
            response_stream: config.response_stream,
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
