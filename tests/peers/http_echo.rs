//! A web handler on the Rust `lambda_http` crate, for the event-format tests: it answers with
//! what the request looked like once `lambda_http` read the event (whatever its format), and
//! sets two cookies, so a test can compare what each format delivers and returns.

use base64::Engine;
use lambda_http::{Body, Error, Request, RequestExt, Response, service_fn};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(echo)).await
}

async fn echo(request: Request) -> Result<Response<Body>, Error> {
    let mut headers = serde_json::Map::new();
    for name in request.headers().keys() {
        let values: Vec<&str> = request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        headers.insert(name.as_str().to_owned(), json!(values));
    }
    let query: Vec<(String, String)> =
        form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let echo = json!({
        "method": request.method().as_str(),
        "path": request.raw_http_path(),
        "query": query,
        "headers": headers,
        "body": base64::engine::general_purpose::STANDARD.encode(request.body().as_ref()),
    });
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("set-cookie", "a=1; Path=/")
        .header("set-cookie", "b=2; Path=/")
        .body(Body::from(echo.to_string()))?)
}
