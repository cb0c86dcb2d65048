//! Pure HTTP ⇄ Lambda event translation: no I/O, no async, one file per payload format.

mod body;
pub mod v2;

use std::net::IpAddr;
use std::time::SystemTime;

use time::OffsetDateTime;
use time::macros::format_description;

use crate::router::Host;

/// Lambda's synchronous invocation payload limit. lrp measures it on the serialized event,
/// because base64 makes a binary body a third larger on the way in (spec §5.1).
pub const MAX_EVENT_BYTES: usize = 6_291_456;
/// The largest result Lambda returns: the limit as Lambda prints it (spec §5.1).
pub const MAX_RESULT_BYTES: usize = 6_291_556;

/// Everything a payload format needs to know about one request, gathered once by the server.
#[derive(Debug)]
pub struct IncomingRequest<'a> {
    pub parts: &'a http::request::Parts,
    pub body: &'a [u8],
    pub host: &'a Host,
    pub peer_ip: IpAddr,
    /// The port the client connected to, for `x-forwarded-port`.
    pub local_port: u16,
    pub request_id: &'a str,
    /// `x-amzn-trace-id` for requests that do not bring one.
    pub trace_id: &'a str,
    pub received: SystemTime,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("malformed function result: {0}")]
    Malformed(String),
}

/// Common Log Format time in UTC, as in `requestContext.time`: `12/Mar/2020:19:03:58 +0000`.
fn clf_time(at: SystemTime) -> String {
    let format =
        format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");
    OffsetDateTime::from(at).format(format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn clf_time_matches_the_aws_example() {
        // 12/Mar/2020:19:03:58 +0000 is the time of the HTTP API documentation's example.
        let at = UNIX_EPOCH + Duration::from_millis(1_584_039_838_123);
        assert_eq!(clf_time(at), "12/Mar/2020:19:03:58 +0000");
        let early = UNIX_EPOCH + Duration::from_secs(5 * 86_400);
        assert_eq!(clf_time(early), "06/Jan/1970:00:00:00 +0000");
    }
}
