//! The floor of a `command` rule on this machine: what serving a function through the Lambda
//! Runtime API costs a proxy that does next to nothing else. `bench/run` measures it beside lrp.
//!
//! It makes the system calls lrp makes per invocation and no more (one epoll thread; a read and
//! a write for the client, the event on `/next`, the `202` to `/response`), keeps every
//! connection alive, and starts the same runtimes lrp does, under `SCHED_BATCH`. What it
//! leaves out is the proxy's own work: the event is a fixed template with a fresh request id,
//! the result is not parsed (the client always gets the function's `/hello` answer), nothing
//! is logged, and requests are trusted (GET without a body from the client; a `content-length`
//! body from the runtime). A connection whose write would block is dropped. Not a proxy: a
//! measuring stick.
//!
//! With `proxy-work` it also does lrp's own work per request, with lrp's code, in the
//! cheapest arrangement: the client's head parsed (httparse) into `http`'s types and its host
//! normalized, ids made, the HTTP API event written, the result parsed, the response's head
//! written as hyper writes it (less its `date`), and the access line logged. What lrp does
//! besides (metrics, admission, deadlines, watching its runtimes, HTTP/2, tasks and their
//! wake-ups) it leaves out. So a `command` rule that does lrp's work cannot cost less here.
//!
//! Usage: `command-floor PORT INSTANCES FUNCTION [proxy-work]`, on 127.0.0.1; the runtimes die
//! with it.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use lrp::event::{Format, IncomingRequest};
use lrp::router::Host;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const FRONT: Token = Token(usize::MAX);
const RUNTIME_API: Token = Token(usize::MAX - 1);
const ACCEPTED: &[u8] = b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n\
    content-length: 15\r\n\r\n{\"status\":\"OK\"}";
const HELLO: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 23\r\n\r\n\
    hello from the function";

#[derive(Clone, Copy)]
enum Role {
    Client,
    Runtime,
}

struct Connection {
    stream: TcpStream,
    role: Role,
    input: Vec<u8>,
    /// With `proxy-work`, a client's request while its function runs.
    pending: Option<Pending>,
}

/// What `proxy-work` keeps of a request until its result comes: what its log line says.
struct Pending {
    started: Instant,
    method: http::Method,
    host: Host,
    path: String,
    request_id: String,
}

struct Floor {
    connections: Vec<Option<Connection>>,
    /// Clients whose request waits for a runtime.
    waiting: VecDeque<(usize, Option<Vec<u8>>)>,
    /// Runtimes waiting on `/next`.
    parked: Vec<usize>,
    invocations: u64,
    scratch: Vec<u8>,
    /// Each read's buffer, kept: one on the stack would be zeroed for every read.
    chunk: Box<[u8]>,
    /// Whether to do lrp's own work per request as well (see the module's doc).
    proxy_work: bool,
    client_side: lrp::event::Connection,
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (port, instances, function, proxy_work) = match args.as_slice() {
        [_, port, instances, function] => (port, instances, function, false),
        [_, port, instances, function, mode] if mode == "proxy-work" => {
            (port, instances, function, true)
        }
        _ => {
            eprintln!("usage: command-floor PORT INSTANCES FUNCTION [proxy-work]");
            std::process::exit(2);
        }
    };
    if proxy_work {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(io::stderr)
            .init();
    }
    let port: u16 = port.parse().map_err(io::Error::other)?;
    let instances: usize = instances.parse().map_err(io::Error::other)?;

    let mut poll = Poll::new()?;
    let mut front = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let mut api = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    poll.registry()
        .register(&mut front, FRONT, Interest::READABLE)?;
    poll.registry()
        .register(&mut api, RUNTIME_API, Interest::READABLE)?;
    let runtime_api = api.local_addr()?.to_string();
    for _ in 0..instances {
        start_runtime(function, &runtime_api)?;
    }

    let mut floor = Floor {
        connections: Vec::new(),
        waiting: VecDeque::new(),
        parked: Vec::new(),
        invocations: 0,
        scratch: Vec::with_capacity(4096),
        chunk: vec![0; 16 * 1024].into_boxed_slice(),
        proxy_work,
        client_side: lrp::event::Connection::new([127, 0, 0, 1].into(), port),
    };
    let mut events = Events::with_capacity(256);
    loop {
        // A tracer attaching (`strace -p`) interrupts the wait; that is not an error.
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            waited => waited?,
        }
        for event in &events {
            match event.token() {
                FRONT => floor.accept(&poll, &front, Role::Client)?,
                RUNTIME_API => floor.accept(&poll, &api, Role::Runtime)?,
                Token(index) => floor.readable(index),
            }
        }
    }
}

fn start_runtime(function: &str, runtime_api: &str) -> io::Result<()> {
    let mut command = Command::new(function);
    command
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "floor")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/floor")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "floor");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            let batch = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_BATCH, &batch);
            Ok(())
        });
    }
    command.spawn().map(drop)
}

impl Floor {
    fn accept(&mut self, poll: &Poll, listener: &TcpListener, role: Role) -> io::Result<()> {
        loop {
            let (mut stream, _) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            stream.set_nodelay(true)?;
            let index = match self.connections.iter().position(Option::is_none) {
                Some(free) => free,
                None => {
                    self.connections.push(None);
                    self.connections.len() - 1
                }
            };
            poll.registry()
                .register(&mut stream, Token(index), Interest::READABLE)?;
            self.connections[index] = Some(Connection {
                stream,
                role,
                input: Vec::with_capacity(16 * 1024),
                pending: None,
            });
        }
    }

    /// Reads what arrived and answers every whole request in it. The poll is edge-triggered: a
    /// read shorter than the buffer emptied the socket, and the next arrival is a new event, so
    /// no read is made only to see it fail (Tokio's `TcpStream` does the same; lrp's reads too).
    fn readable(&mut self, index: usize) {
        let Some(connection) = self.connections.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let chunk = &mut self.chunk[..];
        loop {
            match connection.stream.read(chunk) {
                Ok(0) => return self.close(index),
                Ok(read) => {
                    connection.input.extend_from_slice(&chunk[..read]);
                    if read < chunk.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return self.close(index),
            }
        }
        // Out of the connection while its messages are answered, which may close it.
        let role = connection.role;
        let mut input = std::mem::take(&mut connection.input);
        let mut start = 0;
        while let Some(head) = memchr::memmem::find(&input[start..], b"\r\n\r\n") {
            let head_len = head + 4;
            let length = head_len + content_length(&input[start..start + head_len]);
            if input.len() - start < length {
                break;
            }
            let message = &input[start..start + length];
            start += length;
            match role {
                Role::Client => {
                    let event = if self.proxy_work {
                        self.request_work(index, message)
                    } else {
                        None
                    };
                    match self.parked.pop() {
                        Some(runtime) => self.send_event(runtime, index, event),
                        None => self.waiting.push_back((index, event)),
                    }
                }
                Role::Runtime if message.starts_with(b"GET ") => match self.waiting.pop_front() {
                    Some((client, event)) => self.send_event(index, client, event),
                    None => self.parked.push(index),
                },
                Role::Runtime => {
                    self.send(index, ACCEPTED);
                    match invoked_client(message) {
                        Some(client) if self.proxy_work => {
                            self.result_work(client, &message[head_len..])
                        }
                        Some(client) => self.send(client, HELLO),
                        None => {}
                    }
                }
            }
        }
        input.drain(..start);
        if let Some(connection) = self.connections.get_mut(index).and_then(Option::as_mut) {
            connection.input = input;
        }
    }

    fn send_event(&mut self, runtime: usize, client: usize, event: Option<Vec<u8>>) {
        self.invocations += 1;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let millis = now.as_millis();
        let id = format!("c{client}-{}", self.invocations);
        let event = event.unwrap_or_else(|| format!(
            r#"{{"version":"2.0","routeKey":"$default","rawPath":"/hello","rawQueryString":"","headers":{{"host":"bench.local","x-amzn-trace-id":"Root=1-00000000-000000000000000000000000","x-forwarded-for":"127.0.0.1","x-forwarded-port":"8080","x-forwarded-proto":"http"}},"requestContext":{{"accountId":"anonymous","apiId":"lrp","domainName":"bench.local","domainPrefix":"bench","http":{{"method":"GET","path":"/hello","protocol":"HTTP/1.1","sourceIp":"127.0.0.1","userAgent":""}},"requestId":"{id}","routeKey":"$default","stage":"$default","time":"01/Dec/2026:00:00:00 +0000","timeEpoch":{millis}}},"isBase64Encoded":false}}"#
        ).into_bytes());
        let mut message = std::mem::take(&mut self.scratch);
        message.clear();
        let _ = write!(
            message,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
             lambda-runtime-aws-request-id: {id}\r\nlambda-runtime-deadline-ms: {}\r\n\
             lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:000000000000:function:floor\r\n\
             lambda-runtime-trace-id: Root=1-00000000-000000000000000000000000\r\n\
             content-length: {}\r\n\r\n",
            millis + 3000,
            event.len()
        );
        message.extend_from_slice(&event);
        self.send(runtime, &message);
        self.scratch = message;
    }

    /// `proxy-work`'s part of a client's request: what lrp's server and its HTTP API format do
    /// (parse, route by host, ids, the event), in their cheapest arrangement. `None` leaves
    /// the request to the fixed template.
    fn request_work(&mut self, client: usize, request: &[u8]) -> Option<Vec<u8>> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut head = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(head_length) = head.parse(request).ok()? else {
            return None;
        };
        let mut builder = http::Request::builder()
            .method(head.method?)
            .uri(head.path?);
        for header in head.headers.iter() {
            builder = builder.header(header.name, header.value);
        }
        let (parts, ()) = builder.body(()).ok()?.into_parts();
        let host = Host::of_request(&parts.uri, &parts.headers).ok()?;
        let request_id = lrp::ids::api_request_id();
        let received = SystemTime::now();
        let trace_id = lrp::ids::trace_id_of(&parts.headers, received);
        let incoming = IncomingRequest {
            parts: &parts,
            path: parts.uri.path(),
            body: &request[head_length..],
            host: &host,
            connection: &self.client_side,
            request_id: &request_id,
            trace_id: &trace_id,
            received,
        };
        let event = Format::HttpApi.to_event(&incoming).ok()?;
        let pending = Pending {
            started: Instant::now(),
            path: parts.uri.path().to_owned(),
            method: parts.method,
            host,
            request_id,
        };
        self.connections.get_mut(client)?.as_mut()?.pending = Some(pending);
        Some(event)
    }

    /// `proxy-work`'s part of a result: parsed as lrp parses it, written with the head hyper
    /// would write (less its `date`), and logged as lrp logs it. A request `request_work` left
    /// to the fixed template gets the template's answer.
    fn result_work(&mut self, client: usize, result: &[u8]) {
        let Some(pending) = self
            .connections
            .get_mut(client)
            .and_then(Option::as_mut)
            .and_then(|connection| connection.pending.take())
        else {
            return self.send(client, HELLO);
        };
        let result = bytes::Bytes::copy_from_slice(result);
        let Ok(response) = Format::HttpApi.from_result(result, false) else {
            return self.close(client);
        };
        let (parts, body) = response.into_parts();
        let mut message = std::mem::take(&mut self.scratch);
        message.clear();
        let _ = write!(
            message,
            "HTTP/1.1 {} {}\r\n",
            parts.status.as_str(),
            parts.status.canonical_reason().unwrap_or("")
        );
        for (name, value) in &parts.headers {
            message.extend_from_slice(name.as_str().as_bytes());
            message.extend_from_slice(b": ");
            message.extend_from_slice(value.as_bytes());
            message.extend_from_slice(b"\r\n");
        }
        let _ = write!(
            message,
            "apigw-requestid: {}\r\ncontent-length: {}\r\n\r\n",
            pending.request_id,
            body.len()
        );
        message.extend_from_slice(&body);
        self.send(client, &message);
        self.scratch = message;
        lrp::access_log::Entry {
            method: pending.method.as_str(),
            host: pending.host.as_str(),
            path: &pending.path,
            status: parts.status.as_u16(),
            rule: "bench.local",
            took: pending.started.elapsed(),
            served_by: "local",
            request_id: &pending.request_id,
            error: None,
        }
        .log(tracing::Level::INFO);
    }

    fn send(&mut self, index: usize, message: &[u8]) {
        let Some(connection) = self.connections.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if connection.stream.write(message).ok() != Some(message.len()) {
            self.close(index);
        }
    }

    fn close(&mut self, index: usize) {
        self.connections[index] = None;
        self.waiting.retain(|(waiting, _)| *waiting != index);
        self.parked.retain(|&parked| parked != index);
    }
}

/// The `content-length` of a head, 0 without one.
fn content_length(head: &[u8]) -> usize {
    head.split(|&byte| byte == b'\n')
        .find_map(|line| {
            let (name, value) = line.split_at_checked(15)?;
            name.eq_ignore_ascii_case(b"content-length:").then(|| {
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|value| value.trim().parse().ok())
            })?
        })
        .unwrap_or(0)
}

/// The client whose invocation a `/response` or `/error` settles: its id is `c{client}-{n}`.
fn invoked_client(request: &[u8]) -> Option<usize> {
    let id = memchr::memmem::find(request, b"/invocation/c")? + b"/invocation/c".len();
    let digits = request[id..]
        .iter()
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    std::str::from_utf8(&request[id..id + digits])
        .ok()?
        .parse()
        .ok()
}
