//! Shared by the end-to-end tests: run the real `lrp` binary and real Lambda peers on
//! loopback, send real HTTP, and clean every process up on drop (also when a test fails).

#![allow(dead_code)] // each test file uses its own part of this module

pub mod fake_rie;
pub mod fake_stream_lambda;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const STARTUP_LIMIT: Duration = Duration::from_secs(20);

/// Where the test tools from PyPI live: the virtual environment the test command creates.
pub fn tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("LRP_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with ./scripts/test, which installs the test tools",
        path.display()
    );
    path
}

/// A rule taking `route` (such as `hostname: a.test`) to tests/peers/python_function.py's
/// `handler` on awslambdaric, with `extra` rule keys.
pub fn python_rule(route: &str, handler: &str, extra: &str) -> String {
    format!(
        "  - {route}\n    command: [{:?}, \"-m\", \"awslambdaric\", \"python_function.{handler}\"]\n    \
         working_dir: {:?}\n{extra}",
        tool("python").display().to_string(),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/peers")
            .display()
            .to_string(),
    )
}

/// A binary built by `cargo test` next to lrp: target/<profile>/examples/<name>.
pub fn example_binary(name: &str) -> PathBuf {
    let lrp = Path::new(env!("CARGO_BIN_EXE_lrp"));
    let path = lrp
        .parent()
        .map(|dir| dir.join("examples").join(name))
        .unwrap_or_default();
    assert!(path.exists(), "{} was not built", path.display());
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits until something accepts connections on `port` (a peer that prints nothing when
/// it is ready), asserting it within the startup limit.
async fn wait_for_port(port: u16, what: &str) {
    eventually(what, STARTUP_LIMIT, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
}

/// Waits for `condition`, checking every 10 ms without blocking the test's runtime, and
/// fails the test with `what` if it does not hold within `limit`.
pub async fn eventually(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Collects a child's output lines, so a test can wait for one and a failing test can show
/// them all. Each new line wakes the waiters: no polling.
#[derive(Clone, Default)]
pub struct Output(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Output {
    fn capture(&self, stream: impl std::io::Read + Send + 'static) {
        let shared = self.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                shared.0.lock().unwrap().push(line);
                shared.1.notify_all();
            }
        });
    }

    pub fn text(&self) -> String {
        self.0.0.lock().unwrap().join("\n")
    }

    /// The first line containing `needle`, waiting up to `limit` for it. Blocks: from async
    /// code, use [`Output::line_with`].
    pub fn wait_for(&self, needle: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        let (lines, arrived) = &*self.0;
        let mut lines = lines.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().find(|l| l.contains(needle)) {
                return Some(line.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            lines = arrived.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// [`Output::wait_for`] off the async runtime's threads.
    pub async fn line_with(&self, needle: &str, limit: Duration) -> Option<String> {
        let (output, needle) = (self.clone(), needle.to_owned());
        tokio::task::spawn_blocking(move || output.wait_for(&needle, limit))
            .await
            .expect("the wait does not panic")
    }

    /// How many lines contain `needle` so far.
    pub fn count(&self, needle: &str) -> usize {
        self.0
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// A child process that is killed when dropped.
pub struct Process {
    pub child: Child,
    pub output: Output,
}

impl Process {
    pub fn spawn(command: &mut Command) -> Process {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let output = Output::default();
        if let Some(stdout) = child.stdout.take() {
            output.capture(stdout);
        }
        if let Some(stderr) = child.stderr.take() {
            output.capture(stderr);
        }
        Process { child, output }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// The process's resident set size, from /proc.
    pub fn rss_kib(&self) -> u64 {
        self.memory_kib("VmRSS:")
    }

    /// The most the process's resident set has been, from /proc.
    pub fn peak_rss_kib(&self) -> u64 {
        self.memory_kib("VmHWM:")
    }

    fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the process is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real lrp binary, serving a configuration on a free loopback port.
pub struct Lrp {
    pub process: Process,
    pub addr: SocketAddr,
    _config: Option<tempfile::NamedTempFile>,
}

impl Lrp {
    /// Starts lrp on `rules` (YAML without host and port, which the test picks).
    pub fn start(rules: &str) -> Lrp {
        Self::start_with(rules, [("RUST_LOG", "info")])
    }

    pub fn start_with<K, V>(rules: &str, env: impl IntoIterator<Item = (K, V)>) -> Lrp
    where
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        let mut command = lrp_command();
        command.envs(env);
        Self::start_command(command, rules)
    }

    /// Starts `command` (lrp, or a wrapper that execs it) with the configuration file's path
    /// as its last argument.
    pub fn start_command(command: Command, rules: &str) -> Lrp {
        let mut config = tempfile::NamedTempFile::new().expect("a temp file");
        std::io::Write::write_all(
            &mut config,
            format!("host: 127.0.0.1\nport: 0\n{rules}").as_bytes(),
        )
        .expect("config written");
        let path = config.path().to_owned();
        Self::spawn_command(command, &path, Some(config))
    }

    /// Starts lrp on a configuration file of the test's own (which must pick port 0).
    pub fn start_file(path: &Path) -> Lrp {
        Self::spawn(path, [("RUST_LOG", "info")], None)
    }

    pub fn start_file_with<K, V>(path: &Path, env: impl IntoIterator<Item = (K, V)>) -> Lrp
    where
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        Self::spawn(path, env, None)
    }

    fn spawn<K, V>(
        path: &Path,
        env: impl IntoIterator<Item = (K, V)>,
        config: Option<tempfile::NamedTempFile>,
    ) -> Lrp
    where
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        let mut command = lrp_command();
        command.envs(env);
        Self::spawn_command(command, path, config)
    }

    fn spawn_command(
        mut command: Command,
        path: &Path,
        config: Option<tempfile::NamedTempFile>,
    ) -> Lrp {
        let process = Process::spawn(command.arg(path));
        let line = process
            .output
            .wait_for("listening on ", STARTUP_LIMIT)
            .unwrap_or_else(|| panic!("lrp did not start:\n{}", process.output.text()));
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '"').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Lrp {
            process,
            addr,
            _config: config,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request to `path` with the given Host header.
    pub fn request(&self, method: &str, host: &str, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(self.url(path))
            .header("host", host)
    }

    pub fn logs(&self) -> String {
        self.process.output.text()
    }

    /// Waits (up to 5 s: lrp's output is read on another thread) for a log line with `needle`.
    pub async fn expect_log(&self, needle: &str) -> String {
        let found = self
            .process
            .output
            .line_with(needle, Duration::from_secs(5))
            .await;
        found.unwrap_or_else(|| panic!("no log line with {needle:?} in:\n{}", self.logs()))
    }

    /// The value of one sample in `/metrics`, such as
    /// `lrp_queued_invocations{rule="a"}`; 0 when it is not there.
    pub async fn metric(&self, sample: &str) -> i64 {
        let reply = send(self.request("GET", "lrp", "/metrics"), "").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply
            .text()
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits (up to 10 s) until `/metrics` shows `sample` at `value`.
    pub async fn wait_metric(&self, sample: &str, value: i64) {
        let started = Instant::now();
        loop {
            let now = self.metric(sample).await;
            if now == value {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{sample} stayed at {now}, not {value}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `lrp` with a clean environment: only what a test passes reaches it.
pub fn lrp_command() -> Command {
    clean_command(env!("CARGO_BIN_EXE_lrp"))
}

/// [`lrp_command`] run by a shell that runs `setup` first (`ulimit -n 64`, say), then becomes
/// lrp: the same process, so its pid is lrp's.
pub fn lrp_after_shell(setup: &str) -> Command {
    let mut command = clean_command("sh");
    command.args([
        "-c",
        &format!("{setup} && exec \"$0\" \"$@\""),
        env!("CARGO_BIN_EXE_lrp"),
    ]);
    command
}

/// `program` with a clean environment, as [`lrp_command`].
fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info");
    command
}

/// The cargo-lambda emulator (PyPI `cargo-lambda`) serving the Invoke and Runtime APIs.
pub struct Emulator {
    pub process: Process,
    pub port: u16,
    _project: tempfile::TempDir,
}

impl Emulator {
    /// Starts the emulator for functions named `function` (the RIE name) and `echo`.
    pub async fn start() -> Emulator {
        let project = tempfile::tempdir().expect("a temp dir");
        // cargo-lambda serves the functions a Cargo package declares as binaries.
        std::fs::create_dir(project.path().join("src")).expect("src dir");
        std::fs::write(project.path().join("src/stub.rs"), "fn main() {}\n").expect("stub");
        std::fs::write(
            project.path().join("Cargo.toml"),
            "[package]\nname = \"peers\"\nversion = \"0.0.0\"\nedition = \"2021\"\n[workspace]\n\
             [[bin]]\nname = \"function\"\npath = \"src/stub.rs\"\n\
             [[bin]]\nname = \"echo\"\npath = \"src/stub.rs\"\n",
        )
        .expect("Cargo.toml");
        let port = free_port();
        let mut command = Command::new(tool("cargo-lambda"));
        command
            .args(["lambda", "watch", "--only-lambda-apis", "--disable-cors"])
            .args(["-A", "127.0.0.1", "-P", &port.to_string()])
            .current_dir(project.path());
        let process = Process::spawn(&mut command);
        wait_for_port(port, "the cargo-lambda emulator").await;
        Emulator {
            process,
            port,
            _project: project,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Attaches one process of the Rust test function to `function`'s Runtime API.
    pub fn attach_rust_function(&self, function: &str) -> Process {
        self.attach("rust-function", function)
    }

    /// Attaches one process of the test function built as `example` to `function`.
    pub fn attach(&self, example: &str, function: &str) -> Process {
        let mut command = Command::new(example_binary(example));
        command
            .env_clear()
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{}/.rt/{function}", self.port),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", function)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "test");
        Process::spawn(&mut command)
    }
}

/// moto's server (PyPI `moto[server]`), a local Lambda API for the AWS SDK to call.
pub struct Moto {
    pub process: Process,
    pub port: u16,
}

impl Moto {
    /// In moto's default mode an invoke of an unknown function is `ResourceNotFoundException`
    /// (nothing runs, so no Docker is needed for that answer).
    pub async fn start() -> Moto {
        let port = free_port();
        let mut command = Command::new(tool("moto_server"));
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let process = Process::spawn(&mut command);
        wait_for_port(port, "moto_server").await;
        Moto { process, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// moto's Docker-free Lambda: every function exists and answers with queued results.
    pub async fn use_simple_lambda(&self) {
        self.post(
            "/moto-api/config",
            r#"{"lambda":{"use_docker":false}}"#.into(),
        )
        .await;
    }

    /// Queues results for the next invocations (each a JSON document, as the function's text).
    pub async fn queue_results(&self, results: &[String]) {
        let body = serde_json::json!({"results": results, "region": "us-east-1"});
        self.post("/moto-api/static/lambda-simple/response", body.to_string())
            .await;
    }

    async fn post(&self, path: &str, body: String) {
        let request = Request::builder()
            .method("POST")
            .uri(format!("{}{path}", self.endpoint()));
        let reply = send(request, body).await;
        assert!((200..300).contains(&reply.status), "{}", reply.text());
    }

    /// The environment that points lrp's AWS SDK at this server with test credentials.
    pub fn lrp_env(&self) -> Vec<(&'static str, String)> {
        aws_env(&self.endpoint())
    }
}

/// Environment for lrp's AWS SDK: a local endpoint, fixed keys, no instance metadata.
pub fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL_LAMBDA", endpoint.to_owned()),
        ("AWS_ACCESS_KEY_ID", "AKIDLRPTEST".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "lrp-test-secret".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ]
}

/// A response, fully read.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }
}

pub async fn send(request: http::request::Builder, body: impl Into<Bytes>) -> Reply {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    send_with(&client, request, body).await
}

pub async fn send_with(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: http::request::Builder,
    body: impl Into<Bytes>,
) -> Reply {
    let request = request
        .body(Full::new(body.into()))
        .expect("a valid request");
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .expect("lrp answers within 30 s")
        .expect("the request goes through");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the body arrives")
        .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}
