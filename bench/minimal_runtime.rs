//! A Lambda runtime that does nothing but speak the Runtime API: one blocking connection, and
//! for every invocation a `/next` and a `/response` with the fixed result the bench's functions
//! return. `bench/run` serves it through a command rule beside the `lambda_runtime` function,
//! so the two figures separate what lrp's command path costs from what the function's runtime
//! adds to it: a runtime that runs between lrp's requests leaves lrp's caches colder, and lrp's
//! CPU time per request grows with the runtime's footprint, not only with lrp's own work.
//!
//! Not a runtime to use: it reports no errors and trusts every answer's framing.

use std::io::{self, Read, Write};
use std::net::TcpStream;

const NEXT: &[u8] = b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nhost: runtime\r\n\r\n";
const RESULT: &str = r#"{"statusCode":200,"headers":{"content-type":"text/plain"},"body":"hello from the function"}"#;

fn main() -> io::Result<()> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").map_err(io::Error::other)?;
    let mut connection = Connection {
        stream: TcpStream::connect(api)?,
        buffer: Vec::with_capacity(64 * 1024),
    };
    connection.stream.set_nodelay(true)?;
    let mut request = Vec::with_capacity(512);
    loop {
        connection.stream.write_all(NEXT)?;
        let request_id = connection.response()?.ok_or(io::ErrorKind::InvalidData)?;
        request.clear();
        write!(
            request,
            "POST /2018-06-01/runtime/invocation/{request_id}/response HTTP/1.1\r\n\
             host: runtime\r\ncontent-length: {}\r\n\r\n{RESULT}",
            RESULT.len()
        )?;
        connection.stream.write_all(&request)?;
        connection.response()?;
    }
}

struct Connection {
    stream: TcpStream,
    /// What was read and not yet consumed.
    buffer: Vec<u8>,
}

impl Connection {
    /// Reads one response, body included; its `lambda-runtime-aws-request-id`, if any.
    fn response(&mut self) -> io::Result<Option<String>> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) =
                response.parse(&self.buffer).map_err(io::Error::other)?
            {
                let header = |name: &str| {
                    response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                };
                let length: usize = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let request_id = header("lambda-runtime-aws-request-id").map(str::to_owned);
                while self.buffer.len() < head + length {
                    self.read()?;
                }
                self.buffer.drain(..head + length);
                return Ok(request_id);
            }
            self.read()?;
        }
    }

    fn read(&mut self) -> io::Result<()> {
        let mut chunk = [0; 16 * 1024];
        match self.stream.read(&mut chunk)? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            read => {
                self.buffer.extend_from_slice(&chunk[..read]);
                Ok(())
            }
        }
    }
}
