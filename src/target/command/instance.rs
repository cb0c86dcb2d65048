//! One execution environment: a process running the function's runtime, in its own process
//! group, with its own Runtime API on a loopback port.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
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
    process_group: i32,
    invocations: mpsc::Sender<Invocation>,
    death: watch::Receiver<Option<Death>>,
    api: JoinHandle<()>,
    pub served: u64,
    pub idle_since: Instant,
}

impl Instance {
    pub async fn start(spec: &FunctionSpec, id: u64) -> std::io::Result<Instance> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let runtime_api = listener.local_addr()?.to_string();
        let (invocations, next) = mpsc::channel(1);
        let (death_sender, death) = watch::channel(None);
        let death_sender = Arc::new(death_sender);
        let api = RuntimeApi::new(spec.arn.clone(), next, death_sender.clone());
        let api = tokio::spawn(Arc::new(api).serve(listener));

        let Some((program, args)) = spec.command.split_first() else {
            api.abort();
            return Err(std::io::Error::other("the command is empty"));
        };
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .current_dir(&spec.working_dir)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("AWS_LAMBDA_RUNTIME_API", &runtime_api)
            .env("AWS_LAMBDA_LOG_STREAM_NAME", log_stream_name(id))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so that a timeout ends the runtime and everything it started.
            .process_group(0);
        die_with_parent(&mut command);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                api.abort();
                return Err(e);
            }
        };
        let process_group = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .unwrap_or(0);
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(forward_lines(stdout, spec.name.clone(), id, "stdout"));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(forward_lines(stderr, spec.name.clone(), id, "stderr"));
        }
        let name = spec.name.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            // Whatever the runtime started in its group goes with it.
            kill_group(process_group, libc::SIGKILL);
            let description = match status {
                Ok(status) => format!("Runtime exited with error: {status}"),
                Err(e) => format!("Runtime exited: {e}"),
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
        tracing::info!(function = %spec.name, instance = id, %runtime_api, "started an instance");
        Ok(Instance {
            id,
            process_group,
            invocations,
            death,
            api,
            served: 0,
            idle_since: Instant::now(),
        })
    }

    pub fn is_dead(&self) -> bool {
        self.death.borrow().is_some()
    }

    /// Runs one invocation to its outcome, or to the instance's death.
    pub async fn invoke(
        &self,
        event: Bytes,
        deadline: Instant,
        trace_id: &str,
    ) -> Result<Outcome, Death> {
        let (reply, outcome) = oneshot::channel();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let invocation = Invocation {
            request_id: ids::lambda_request_id(),
            event,
            deadline_epoch_ms: ids::epoch_millis(SystemTime::now() + remaining),
            trace_id: trace_id.to_owned(),
            reply,
        };
        let mut death = self.death.clone();
        if self.invocations.send(invocation).await.is_err() {
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

    /// Asks the runtime to stop (SIGTERM), and kills it if it has not within `grace`.
    pub async fn stop(mut self, grace: Duration) {
        kill_group(self.process_group, libc::SIGTERM);
        let _ = tokio::time::timeout(grace, self.death.wait_for(Option::is_some)).await;
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !self.is_dead() {
            kill_group(self.process_group, libc::SIGKILL);
        }
        self.api.abort();
    }
}

/// Sends `signal` to every process in the group.
fn kill_group(process_group: i32, signal: i32) {
    if process_group > 0 {
        // SAFETY: killpg only sends a signal; the group is one this instance created.
        unsafe {
            libc::killpg(process_group, signal);
        }
    }
}

/// On Linux, the runtime is killed if lrp itself dies without the chance to stop it.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut tokio::process::Command) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe, as a pre_exec hook must be.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut tokio::process::Command) {}

/// Sends each line of a runtime's output to lrp's log, tagged with the function.
async fn forward_lines(
    stream: impl AsyncRead + Unpin,
    function: String,
    instance: u64,
    name: &str,
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
            log_line(&function, instance, name, &line);
            line.clear();
        }
    }
    if !line.is_empty() {
        log_line(&function, instance, name, &line);
    }
}

fn log_line(function: &str, instance: u64, stream: &str, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    tracing::info!(target: "lrp::function", function, instance, stream, "{text}");
}

fn log_stream_name(instance: u64) -> String {
    let day = time::OffsetDateTime::now_utc().date();
    format!("{day}/[$LATEST]{instance:032x}")
}
