//! One execution environment: a process running the function's runtime, in its own process
//! group, with its own Runtime API on a loopback port.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::runtime_api::{Death, Invocation, Outcome, RuntimeApi};
use crate::ids;

/// Longer log lines are cut, so a runtime printing without newlines cannot exhaust memory.
const MAX_LOG_LINE: usize = 16 * 1024;

/// What every execution environment of one function shares.
#[derive(Debug)]
pub struct FunctionSpec {
    pub name: String,
    pub command: Vec<String>,
    pub working_dir: PathBuf,
    /// Lambda's environment variables followed by the rule's own `env`.
    pub env: Vec<(String, String)>,
    pub arn: String,
}

pub struct Instance {
    pub id: u64,
    /// The runtime's recent output, for an invocation's log tail.
    pub output: OutputTail,
    process: Arc<ProcessGroup>,
    runtime_api: Arc<RuntimeApi>,
    /// Set when the instance can serve no more: it reported an init error, or exited.
    death: watch::Receiver<Option<Death>>,
    serving: JoinHandle<()>,
    /// The worker thread whose runtime serves the instance's Runtime API.
    pub home: std::thread::ThreadId,
    pub served: u64,
    pub idle_since: Instant,
}

impl Instance {
    pub async fn start(spec: &FunctionSpec, id: u64) -> std::io::Result<Instance> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let (death_sender, death) = watch::channel(None);
        let death_sender = Arc::new(death_sender);
        let runtime_api = Arc::new(RuntimeApi::new(spec.arn.clone(), death_sender.clone()));
        let serving = tokio::spawn(runtime_api.clone().serve(listener));

        let Some((program, args)) = spec.command.split_first() else {
            serving.abort();
            return Err(std::io::Error::other("the command is empty"));
        };
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .current_dir(&spec.working_dir)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("AWS_LAMBDA_RUNTIME_API", &address)
            .env("AWS_LAMBDA_LOG_STREAM_NAME", log_stream_name(id))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so that a timeout ends the runtime and everything it started.
            .process_group(0);
        tie_to_lrp(&mut command);
        crate::open_files::restore_in_child(&mut command);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                serving.abort();
                return Err(e);
            }
        };
        let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) else {
            serving.abort();
            return Err(std::io::Error::other("the runtime exited at once"));
        };
        let output = OutputTail::default();
        if let Some(stdout) = child.stdout.take() {
            let output = output.clone();
            tokio::spawn(forward_lines(
                stdout,
                spec.name.clone(),
                id,
                "stdout",
                output,
            ));
        }
        if let Some(stderr) = child.stderr.take() {
            let output = output.clone();
            tokio::spawn(forward_lines(
                stderr,
                spec.name.clone(),
                id,
                "stderr",
                output,
            ));
        }
        let process = Arc::new(ProcessGroup {
            running: Mutex::new(Some(pid)),
            exited: watch::channel(false).0,
        });
        let name = spec.name.clone();
        let reaper = process.clone();
        tokio::spawn(async move {
            let description = match reaper.reap(child).await {
                Some(status) => format!("Runtime exited with error: {status}"),
                None => "Runtime exited".to_owned(),
            };
            tracing::debug!(function = %name, instance = id, "{description}");
            death_sender.send_if_modified(|death| {
                // An init error reported before the exit says more than the exit does.
                let first = death.is_none();
                if first {
                    *death = Some(Death::Exited(description));
                }
                first
            });
        });
        tracing::info!(function = %spec.name, instance = id, runtime_api = %address, "started an instance");
        Ok(Instance {
            id,
            output,
            process,
            runtime_api,
            death,
            serving,
            home: std::thread::current().id(),
            served: 0,
            idle_since: Instant::now(),
        })
    }

    /// It reported an init error or exited: it can serve no more (it may still be running).
    pub fn is_dead(&self) -> bool {
        self.death.borrow().is_some()
    }

    /// Runs one invocation to its outcome, or to the instance's death.
    pub async fn invoke(
        &self,
        request_id: &str,
        event: Bytes,
        deadline: Instant,
        trace_id: String,
    ) -> Result<Outcome, Death> {
        let (reply, outcome) = oneshot::channel();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let invocation = Invocation {
            request_id: request_id.to_owned(),
            event,
            deadline_epoch_ms: ids::epoch_millis(SystemTime::now() + remaining),
            deadline,
            trace_id,
            reply,
        };
        let mut death = self.death.clone();
        if self.runtime_api.invoke(invocation).is_err() {
            return Err(Death::Exited("the Runtime API is closed".into()));
        }
        tokio::select! {
            outcome = outcome => outcome.map_err(|_| Death::Exited("the Runtime API is closed".into())),
            died = death.wait_for(Option::is_some) => Err(died
                .ok()
                .and_then(|d| d.clone())
                .unwrap_or_else(|| Death::Exited("the instance was lost".into()))),
        }
    }

    /// Asks the runtime to stop (SIGTERM), and kills it if it has not exited within `grace`.
    pub async fn stop(self, grace: Duration) {
        self.process.signal(libc::SIGTERM);
        let mut exited = self.process.exited.subscribe();
        let _ = tokio::time::timeout(grace, exited.wait_for(|exited| *exited)).await;
        // Drop sends SIGKILL if it is still running.
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Whatever it reported, a live process goes with its instance.
        self.process.signal(libc::SIGKILL);
        self.runtime_api.shut_down();
        self.serving.abort();
    }
}

/// The runtime's process group, signalled only while its leader has not been reaped: once
/// it is, the pid may belong to another process.
struct ProcessGroup {
    /// The leader's pid (which is the group's id) until it is reaped.
    running: Mutex<Option<i32>>,
    exited: watch::Sender<bool>,
}

impl ProcessGroup {
    /// Sends `signal` to every process in the group, unless the leader was reaped.
    fn signal(&self, signal: i32) {
        if let Ok(running) = self.running.lock()
            && let Some(group) = *running
        {
            // SAFETY: killpg only sends a signal. The group's leader is this instance's child
            // and not yet reaped (we hold the lock the reaper takes), so the id is still ours.
            unsafe {
                libc::killpg(group, signal);
            }
        }
    }

    /// Waits for the leader to exit, kills what it left in its group while its pid still
    /// names the group (an unreaped zombie keeps it), then reaps it.
    async fn reap(&self, mut child: tokio::process::Child) -> Option<std::process::ExitStatus> {
        let pid = self.running.lock().ok().and_then(|running| *running);
        if let Some(pid) = pid {
            exit_without_reaping(pid).await;
        }
        let status = {
            let mut running = self.running.lock().ok()?;
            if let Some(group) = running.take() {
                // SAFETY: as in `signal`: the leader is a zombie we have not reaped.
                unsafe {
                    libc::killpg(group, libc::SIGKILL);
                }
            }
            child.try_wait()
        };
        let status = match status {
            Ok(Some(status)) => Some(status),
            // Only when the wait above ended without an exit (it cannot watch the process).
            _ => child.wait().await.ok(),
        };
        self.exited.send_replace(true);
        status
    }
}

/// Resolves when process `pid` (a child of ours) has exited, leaving it unreaped.
async fn exit_without_reaping(pid: i32) {
    #[cfg(target_os = "linux")]
    if let Some(pidfd) = pidfd(pid) {
        // A pidfd becomes readable when its process exits, and reading it reaps nothing.
        let _ = pidfd.readable().await;
        return;
    }
    // Elsewhere: ask waitid, without reaping, every 50 ms.
    while !has_exited(pid) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether child `pid` has exited (or cannot be waited for), without reaping it.
fn has_exited(pid: i32) -> bool {
    // SAFETY: a zeroed siginfo_t is valid; waitid only writes into it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: waitid with WNOWAIT only reads the child's state.
    let result = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
    // SAFETY: waitid sets si_pid (0 while the child runs).
    result != 0 || unsafe { info.si_pid() } != 0
}

#[cfg(target_os = "linux")]
fn pidfd(pid: i32) -> Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the descriptor was just opened and is owned by nobody else.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: the AsyncFd owns the descriptor, which stays open until it is dropped.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .ok()
}

/// On Linux, two settings of the runtime's process:
/// - it is killed if lrp itself dies without the chance to stop it (`PR_SET_PDEATHSIG`);
/// - it runs under `SCHED_BATCH` (sched(7)): a runtime woken by lrp's answer to `/next` or
///   `/response` does not preempt lrp, which then finishes what it was doing (often the
///   client's response) before the runtime runs. Without it, every invocation switches to the
///   runtime and back twice. The runtime is noninteractive work that only lrp talks to, the
///   case `SCHED_BATCH` is for; its nice value is unchanged, and a failure leaves it as it was.
#[cfg(target_os = "linux")]
fn tie_to_lrp(command: &mut tokio::process::Command) {
    // SAFETY: prctl and sched_setscheduler are single system calls with no lock or
    // allocation, safe in a pre_exec hook; `param` is on the child's stack.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn tie_to_lrp(_command: &mut tokio::process::Command) {}

/// The last 4 KB of what the runtime printed since an invocation started, as Lambda returns
/// it for `X-Amz-Log-Type: Tail`, framed by Lambda's START, END and REPORT lines.
#[derive(Clone, Default)]
pub struct OutputTail(Arc<Mutex<Option<String>>>);

/// Lambda returns at most this much of an invocation's log.
const LOG_TAIL_BYTES: usize = 4096;

impl OutputTail {
    /// Starts collecting the runtime's output for the invocation `request_id`.
    pub fn start(&self, request_id: &str) {
        if let Ok(mut tail) = self.0.lock() {
            *tail = Some(format!("START RequestId: {request_id} Version: $LATEST\n"));
        }
    }

    /// Stops collecting; the invocation's log, at most its last 4 KB.
    pub async fn finish(&self, request_id: &str, took: Duration) -> String {
        // The runtime printed before it answered, but its lines travel through a pipe and
        // another task: give them a moment to arrive.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut log = self
            .0
            .lock()
            .ok()
            .and_then(|mut t| t.take())
            .unwrap_or_default();
        let ms = took.as_secs_f64() * 1000.0;
        log.push_str(&format!(
            "END RequestId: {request_id}\nREPORT RequestId: {request_id}\tDuration: {ms:.2} ms\n"
        ));
        if log.len() > LOG_TAIL_BYTES {
            let start = log.ceil_char_boundary(log.len() - LOG_TAIL_BYTES);
            log.drain(..start);
        }
        log
    }

    fn push(&self, line: &str) {
        if let Ok(mut tail) = self.0.lock()
            && let Some(tail) = tail.as_mut()
        {
            tail.push_str(line);
            tail.push('\n');
            // Bounded: only the end is ever returned.
            if tail.len() > 2 * LOG_TAIL_BYTES {
                let start = tail.ceil_char_boundary(tail.len() - LOG_TAIL_BYTES);
                tail.drain(..start);
            }
        }
    }
}

/// Sends each line of a runtime's output to lrp's log, tagged with the function, and to the
/// instance's output tail.
async fn forward_lines(
    stream: impl AsyncRead + Unpin,
    function: String,
    instance: u64,
    name: &str,
    output: OutputTail,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        let buffer = match reader.fill_buf().await {
            Ok(buffer) if !buffer.is_empty() => buffer,
            _ => break,
        };
        let newline = memchr::memchr(b'\n', buffer);
        let chunk = &buffer[..newline.unwrap_or(buffer.len())];
        let room = MAX_LOG_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = newline.map_or(buffer.len(), |i| i + 1);
        reader.consume(used);
        if newline.is_some() {
            log_line(&function, instance, name, &line, &output);
            line.clear();
        }
    }
    if !line.is_empty() {
        log_line(&function, instance, name, &line, &output);
    }
}

fn log_line(function: &str, instance: u64, stream: &str, line: &[u8], output: &OutputTail) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    output.push(text);
    tracing::info!(target: "lrp::function", function, instance, stream, "{text}");
}

fn log_stream_name(instance: u64) -> String {
    let day = time::OffsetDateTime::now_utc().date();
    format!("{day}/[$LATEST]{instance:032x}")
}
