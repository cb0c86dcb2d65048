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
//! Usage: `command-floor PORT INSTANCES FUNCTION`, on 127.0.0.1; the runtimes die with it.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

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

/// What a whole request on a connection is.
enum Message {
    /// A client's request.
    Request,
    /// A runtime's `GET /next`.
    Next,
    /// A runtime's `/response` or `/error`, for this client (`None`: an id the floor never gave).
    Settled(Option<usize>),
}

struct Connection {
    stream: TcpStream,
    role: Role,
    input: Vec<u8>,
}

struct Floor {
    connections: Vec<Option<Connection>>,
    /// Clients whose request waits for a runtime.
    waiting: VecDeque<usize>,
    /// Runtimes waiting on `/next`.
    parked: Vec<usize>,
    invocations: u64,
    scratch: Vec<u8>,
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, port, instances, function] = args.as_slice() else {
        eprintln!("usage: command-floor PORT INSTANCES FUNCTION");
        std::process::exit(2);
    };
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
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match connection.stream.read(&mut chunk) {
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
        while let Some(connection) = self.connections.get_mut(index).and_then(Option::as_mut) {
            let Some(head) = memchr::memmem::find(&connection.input, b"\r\n\r\n") else {
                return;
            };
            let head_len = head + 4;
            let body_len = content_length(&connection.input[..head_len]);
            if connection.input.len() < head_len + body_len {
                return;
            }
            let message = match connection.role {
                Role::Client => Message::Request,
                Role::Runtime if connection.input.starts_with(b"GET ") => Message::Next,
                Role::Runtime => Message::Settled(invoked_client(&connection.input)),
            };
            connection.input.drain(..head_len + body_len);
            match message {
                Message::Request => match self.parked.pop() {
                    Some(runtime) => self.send_event(runtime, index),
                    None => self.waiting.push_back(index),
                },
                Message::Next => match self.waiting.pop_front() {
                    Some(client) => self.send_event(index, client),
                    None => self.parked.push(index),
                },
                Message::Settled(client) => {
                    self.send(index, ACCEPTED);
                    if let Some(client) = client {
                        self.send(client, HELLO);
                    }
                }
            }
        }
    }

    fn send_event(&mut self, runtime: usize, client: usize) {
        self.invocations += 1;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let millis = now.as_millis();
        let id = format!("c{client}-{}", self.invocations);
        let event = format!(
            r#"{{"version":"2.0","routeKey":"$default","rawPath":"/hello","rawQueryString":"","headers":{{"host":"bench.local","x-amzn-trace-id":"Root=1-00000000-000000000000000000000000","x-forwarded-for":"127.0.0.1","x-forwarded-port":"8080","x-forwarded-proto":"http"}},"requestContext":{{"accountId":"anonymous","apiId":"lrp","domainName":"bench.local","domainPrefix":"bench","http":{{"method":"GET","path":"/hello","protocol":"HTTP/1.1","sourceIp":"127.0.0.1","userAgent":""}},"requestId":"{id}","routeKey":"$default","stage":"$default","time":"01/Dec/2026:00:00:00 +0000","timeEpoch":{millis}}},"isBase64Encoded":false}}"#
        );
        let mut message = std::mem::take(&mut self.scratch);
        message.clear();
        let _ = write!(
            message,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
             lambda-runtime-aws-request-id: {id}\r\nlambda-runtime-deadline-ms: {}\r\n\
             lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:000000000000:function:floor\r\n\
             lambda-runtime-trace-id: Root=1-00000000-000000000000000000000000\r\n\
             content-length: {}\r\n\r\n{event}",
            millis + 3000,
            event.len()
        );
        self.send(runtime, &message);
        self.scratch = message;
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
        self.waiting.retain(|&waiting| waiting != index);
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
