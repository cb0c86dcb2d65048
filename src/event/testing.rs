//! Builds requests the way the server sees them, for the format tests.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{Response, Version};
use serde_json::Value;

use super::{Connection, Format, IncomingRequest};
use crate::router::Host;

pub const TRACE_ID: &str = "Root=1-5e6a8a5e-0123456789abcdef01234567";
pub const REQUEST_ID: &str = "QQCtFipSIAMEPNQ=";
/// 12/Mar/2020:19:03:58 +0000, the time of the HTTP API documentation's example.
pub const RECEIVED_SECS: u64 = 1_584_039_838;

pub struct RequestBuilder {
    request: http::request::Builder,
    body: Vec<u8>,
    peer_ip: IpAddr,
}

pub fn request(method: &str, target: &str) -> RequestBuilder {
    RequestBuilder {
        request: http::Request::builder().method(method).uri(target),
        body: Vec::new(),
        peer_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
    }
}

impl RequestBuilder {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.request = self.request.header(name, value);
        self
    }
    pub fn version(mut self, version: Version) -> Self {
        self.request = self.request.version(version);
        self
    }
    pub fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }
    pub fn peer(mut self, ip: IpAddr) -> Self {
        self.peer_ip = ip;
        self
    }

    /// The event `format` sends for this request, or `None` if it refuses it as too large.
    pub fn try_event_bytes(self, format: &Format) -> Option<Vec<u8>> {
        let (parts, ()) = self.request.body(()).unwrap().into_parts();
        let host = Host::of_request(&parts.uri, &parts.headers)
            .unwrap_or_else(|_| Host::parse("fallback").unwrap());
        let connection = Connection::new(self.peer_ip, 8080);
        let incoming = IncomingRequest {
            parts: &parts,
            path: parts.uri.path(),
            body: &self.body,
            host: &host,
            connection: &connection,
            request_id: REQUEST_ID,
            trace_id: TRACE_ID,
            received: UNIX_EPOCH + Duration::from_secs(RECEIVED_SECS),
        };
        format.to_event(&incoming).ok()
    }

    pub fn event_bytes(self, format: &Format) -> Vec<u8> {
        self.try_event_bytes(format).expect("the event fits")
    }

    pub fn event(self, format: &Format) -> Value {
        serde_json::from_slice(&self.event_bytes(format)).unwrap()
    }
}

/// Every value of the response header `name`, as text.
pub fn header_values(response: &Response<Bytes>, name: &str) -> Vec<String> {
    response
        .headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}
