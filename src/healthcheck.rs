//! `lrp healthcheck`: asks the lrp a configuration describes for `{prefix}/healthz`, so a
//! container health check needs neither curl nor a shell, whatever the port and prefix.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::Config;

/// The URL of `config`'s health route, reached over loopback when lrp listens everywhere.
pub fn url(config: &Config) -> Result<Uri, String> {
    if config.port == 0 {
        return Err(
            "the configuration listens on port 0 (any port), so there is no port to check".into(),
        );
    }
    let host = match config.host.as_str() {
        "" | "0.0.0.0" => "127.0.0.1".to_owned(),
        "::" | "[::]" => "[::1]".to_owned(),
        ipv6 if ipv6.contains(':') && !ipv6.starts_with('[') => format!("[{ipv6}]"),
        host => host.to_owned(),
    };
    format!(
        "http://{host}:{}{}/healthz",
        config.port, config.internal_route_prefix
    )
    .parse()
    .map_err(|e| format!("cannot build the health URL: {e}"))
}

/// `Ok` when lrp answers 200 within `timeout`.
pub async fn check(config: &Config, timeout: Duration) -> Result<(), String> {
    let url = url(config)?;
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let request = Request::get(url.clone())
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, client.request(request)).await {
        Err(_) => Err(format!("{url}: no answer within {timeout:?}")),
        Ok(Err(e)) => Err(format!("{url}: {e}")),
        Ok(Ok(response)) if response.status() == StatusCode::OK => Ok(()),
        Ok(Ok(response)) => Err(format!("{url}: {}", response.status())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url_for(yaml: &str) -> Result<String, String> {
        let config = Config::from_yaml(yaml, "lrp.yaml").map_err(|e| e.to_string())?;
        url(&config).map(|u| u.to_string())
    }

    #[test]
    fn the_url_follows_host_port_and_prefix() {
        assert_eq!(url_for("").unwrap(), "http://127.0.0.1:8080/healthz");
        assert_eq!(
            url_for("port: 9000\ninternal_route_prefix: __lrp__").unwrap(),
            "http://127.0.0.1:9000/__lrp__/healthz"
        );
        assert_eq!(url_for("host: '::'").unwrap(), "http://[::1]:8080/healthz");
        assert_eq!(
            url_for("host: 10.1.2.3").unwrap(),
            "http://10.1.2.3:8080/healthz"
        );
        assert!(url_for("port: 0").is_err());
    }
}
