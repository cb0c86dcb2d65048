//! Fresh identifiers in the shapes AWS uses.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// An HTTP API request id: 11 random bytes in base64, such as `QQCtFipSIAMEPNQ=`.
pub fn api_request_id() -> String {
    let random = fastrand::u128(..).to_le_bytes();
    STANDARD.encode(&random[..11])
}

/// A Lambda request id: a random UUID.
pub fn lambda_request_id() -> String {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes())
        .into_uuid()
        .to_string()
}

/// An X-Ray trace header: `Root=1-{epoch seconds, hex}-{96 random bits, hex}`.
pub fn trace_id(at: SystemTime) -> String {
    // Digits written into a fixed buffer: `format!` costs as much again as the rest of the
    // event, and pushing them onto a `String` one `char` at a time half as much.
    fn write_hex(digits: &mut [u8], value: u128) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let last = digits.len() - 1;
        for (i, digit) in digits.iter_mut().enumerate() {
            *digit = HEX[((value >> ((last - i) * 4)) & 0xf) as usize];
        }
    }
    let mut text = *b"Root=1-00000000-000000000000000000000000";
    write_hex(
        &mut text[7..15],
        u128::from(epoch_seconds(at) & 0xffff_ffff),
    );
    write_hex(&mut text[16..], fastrand::u128(..));
    String::from_utf8(text.to_vec()).unwrap_or_default()
}

/// The request's own X-Ray trace header, else a fresh one for a request received `at`.
pub fn trace_id_of(headers: &http::HeaderMap, at: SystemTime) -> String {
    headers
        .get(&crate::event::TRACE_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| trace_id(at), str::to_owned)
}

/// Whole seconds since the epoch (0 for a time before it).
pub fn epoch_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Milliseconds since the epoch.
pub fn epoch_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn request_ids_look_like_http_apis_and_differ() {
        let a = api_request_id();
        assert_eq!(a.len(), 16);
        assert!(a.ends_with('='));
        assert_ne!(a, api_request_id());
    }

    #[test]
    fn lambda_request_ids_are_v4_uuids() {
        let id = lambda_request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_ne!(id, lambda_request_id());
    }

    #[test]
    fn trace_ids_have_the_xray_shape() {
        let id = trace_id(UNIX_EPOCH + Duration::from_secs(0x5e6a_8a5e));
        let (head, random) = id.split_at("Root=1-5e6a8a5e-".len());
        assert_eq!(head, "Root=1-5e6a8a5e-");
        assert_eq!(random.len(), 24);
        assert!(random.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!random.bytes().any(|b| b.is_ascii_uppercase()));
        assert_ne!(id, trace_id(UNIX_EPOCH + Duration::from_secs(0x5e6a_8a5e)));
    }

    #[test]
    fn epoch_is_in_milliseconds() {
        assert_eq!(
            epoch_millis(UNIX_EPOCH + Duration::from_millis(1_584_039_838_123)),
            1_584_039_838_123
        );
    }
}
