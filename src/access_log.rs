//! The access log: one line per HTTP request, the only log output on the hot path.
//!
//! The line has the fields and the layout `tracing-subscriber`'s `fmt` layer gives an event
//! (text or JSON, whichever the rest of the log uses), and obeys `RUST_LOG` for the target
//! [`TARGET`] as such an event would. It is written without that layer's formatting pass: no
//! field visitor, no `fmt::Write` per field, the time formatted once per second per thread.
//!
//! Each thread keeps its lines in a buffer and writes them with one `write`: once they fill
//! [`FLUSH_BYTES`], when it logs a line in a later second than the oldest one waiting, and at
//! most [`IDLE_FLUSH_DELAY`] after its runtime went idle (worker runtimes call [`on_idle`]
//! before they park). Lines carry their own time, so the wait changes none of them.

use std::cell::RefCell;
use std::fmt::Display;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::Level;

use crate::ids::epoch_seconds;

/// The target the lines are filtered by (`RUST_LOG=lrp::access=warn` keeps only failures).
pub const TARGET: &str = "lrp::access";

/// How log lines look, set once at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Text,
    Json,
}

static STYLE: OnceLock<Style> = OnceLock::new();

/// Chooses the layout of access lines; the first call wins. Without a call, lines are text.
pub fn init(style: Style) {
    let _ = STYLE.set(style);
}

/// One request, as it is logged.
pub struct Entry<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub rule: &'a str,
    pub took: Duration,
    pub served_by: &'a str,
    pub request_id: &'a str,
    /// When lrp answered for the function: the error's kind and its cause.
    pub error: Option<(&'a str, &'a dyn Display)>,
}

impl Entry<'_> {
    /// Writes the line at `level` (INFO or WARN), if `RUST_LOG` lets that level through.
    pub fn log(&self, level: Level) {
        let enabled = if level == Level::WARN {
            tracing::enabled!(target: TARGET, Level::WARN)
        } else {
            tracing::enabled!(target: TARGET, Level::INFO)
        };
        if !enabled {
            return;
        }
        let style = STYLE.get().copied().unwrap_or(Style::Text);
        let now = SystemTime::now();
        with_lines(|lines| {
            if lines.append(now, |lines| self.format(style, level, now, lines)) {
                lines.flush();
            }
        });
    }

    fn format(&self, style: Style, level: Level, now: SystemTime, lines: &mut Lines) {
        match style {
            Style::Text => self.text(level, now, lines),
            Style::Json => self.json(level, now, lines),
        }
    }

    /// `2026-11-30T18:11:18.123456Z  INFO lrp::access: request method=GET host=… …`: text
    /// values as tracing prints `%value`, and `served_by` and `error` as it prints `&str`.
    fn text(&self, level: Level, now: SystemTime, lines: &mut Lines) {
        lines.timestamp(now);
        let level = if level == Level::WARN {
            "  WARN "
        } else {
            "  INFO "
        };
        lines.push(level);
        lines.push(TARGET);
        lines.push(": request method=");
        lines.push(self.method);
        lines.push(" host=");
        lines.push(self.host);
        lines.push(" path=");
        lines.push(self.path);
        lines.push(" status=");
        lines.number(u64::from(self.status));
        lines.push(" rule=");
        lines.push(self.rule);
        lines.push(" duration_ms=");
        lines.millis(self.took);
        lines.push(" served_by=\"");
        lines.push(self.served_by);
        lines.push("\" request_id=");
        lines.push(self.request_id);
        if let Some((kind, cause)) = self.error {
            lines.push(" error=\"");
            lines.push(kind);
            lines.push("\" cause=");
            let _ = write!(lines.buffer, "{cause}");
        }
        lines.push("\n");
    }

    /// One object per line, as `tracing-subscriber`'s JSON layer flattens an event.
    fn json(&self, level: Level, now: SystemTime, lines: &mut Lines) {
        lines.push("{\"timestamp\":\"");
        lines.timestamp(now);
        lines.push(if level == Level::WARN {
            "\",\"level\":\"WARN\""
        } else {
            "\",\"level\":\"INFO\""
        });
        lines.push(",\"message\":\"request\",\"method\":");
        lines.json_string(self.method);
        lines.push(",\"host\":");
        lines.json_string(self.host);
        lines.push(",\"path\":");
        lines.json_string(self.path);
        lines.push(",\"status\":");
        lines.number(u64::from(self.status));
        lines.push(",\"rule\":");
        lines.json_string(self.rule);
        lines.push(",\"duration_ms\":");
        lines.millis(self.took);
        lines.push(",\"served_by\":");
        lines.json_string(self.served_by);
        lines.push(",\"request_id\":");
        lines.json_string(self.request_id);
        if let Some((kind, cause)) = self.error {
            lines.push(",\"error\":");
            lines.json_string(kind);
            lines.push(",\"cause\":");
            let _ = serde_json::to_writer(&mut lines.buffer, &DisplayString(cause));
        }
        lines.push(",\"target\":\"");
        lines.push(TARGET);
        lines.push("\"}\n");
    }
}

/// Writes `bytes` to standard error without `std::io::Stderr`'s lock, which two workers
/// logging at once contend for (a futex wait each time). Whole lines go out in one `write`,
/// which keeps them whole. As with tracing's writer, lines that cannot be written are lost.
fn write_to_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: the pointer and length describe `bytes`, which outlives the call; fd 2 is
        // only written to, never closed or reopened by lrp.
        let written =
            unsafe { libc::write(libc::STDERR_FILENO, bytes.as_ptr().cast(), bytes.len()) };
        match usize::try_from(written) {
            Ok(0) => return,
            Ok(written) => bytes = &bytes[written.min(bytes.len())..],
            Err(_) if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {
            }
            Err(_) => return,
        }
    }
}

/// Buffered lines are written once they reach this size, idle or not.
const FLUSH_BYTES: usize = 32 * 1024;

/// How long lines wait once their worker went idle. Written each time it went idle, they
/// cost a `write` per wake-up: at 4,700 requests/s, about one every 4 requests on a command
/// rule. Waiting saves 2.9 µs per request there, and 1.6 µs on a local rule
/// (`bench/README.md`, tenth pass). nginx's `access_log … flush=` makes the same trade.
const IDLE_FLUSH_DELAY: Duration = Duration::from_millis(100);

/// Worker runtimes call it each time they go idle: the lines this thread holds are written
/// within [`IDLE_FLUSH_DELAY`], by a task it starts unless one is already waiting. Outside a
/// runtime, they are written at once.
pub fn on_idle() {
    with_lines(|lines| {
        if lines.buffer.is_empty() || lines.flush_waiting {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                lines.flush_waiting = true;
                // Created here, so that a task dropped before it ever ran writes them too.
                let flush = FlushWhenDone;
                runtime.spawn(async move {
                    tokio::time::sleep(IDLE_FLUSH_DELAY).await;
                    drop(flush);
                });
            }
            Err(_) => lines.flush(),
        }
    });
}

/// Writes this thread's lines when the waiting task ends, or is dropped with its runtime.
struct FlushWhenDone;

impl Drop for FlushWhenDone {
    fn drop(&mut self) {
        with_lines(|lines| {
            lines.flush();
            lines.flush_waiting = false;
        });
    }
}

/// Writes the lines this thread holds.
pub fn flush() {
    with_lines(Lines::flush);
}

/// Runs `f` on this thread's lines, unless they are in use (a call inside a call) or gone
/// (the thread is exiting, and their own drop writes what is left).
fn with_lines(f: impl FnOnce(&mut Lines)) {
    let _ = LINES.try_with(|lines| {
        if let Ok(mut lines) = lines.try_borrow_mut() {
            f(&mut lines);
        }
    });
}

thread_local! {
    static LINES: RefCell<Lines> = RefCell::new(Lines::default());
}

/// A thread's buffered lines, and the text of the second it last formatted.
#[derive(Default)]
struct Lines {
    buffer: Vec<u8>,
    /// The second of the oldest line waiting in `buffer`.
    oldest: Option<u64>,
    /// A task will write `buffer` soon (see [`on_idle`]).
    flush_waiting: bool,
    second: Option<(u64, [u8; SECOND_LEN])>,
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.flush();
    }
}

/// `2026-11-30T18:11:18`
const SECOND_LEN: usize = 19;

impl Lines {
    /// Adds the line `write` writes at `now`; true when the buffer should go out now.
    fn append(&mut self, now: SystemTime, write: impl FnOnce(&mut Lines)) -> bool {
        let oldest = *self.oldest.get_or_insert_with(|| epoch_seconds(now));
        write(self);
        self.buffer.len() >= FLUSH_BYTES || epoch_seconds(now) > oldest
    }

    fn flush(&mut self) {
        if !self.buffer.is_empty() {
            write_to_stderr(&self.buffer);
            self.buffer.clear();
        }
        self.oldest = None;
    }

    fn push(&mut self, text: &str) {
        self.buffer.extend_from_slice(text.as_bytes());
    }

    fn number(&mut self, n: u64) {
        self.push(itoa::Buffer::new().format(n));
    }

    /// Milliseconds with three decimals (whole microseconds).
    fn millis(&mut self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.number(micros / 1000);
        self.fraction(micros % 1000, 3);
    }

    /// `.` and the last `digits` digits of `value`, zero-padded.
    fn fraction(&mut self, value: u64, digits: u32) {
        self.buffer.push(b'.');
        for place in (0..digits).rev() {
            let digit = value / 10u64.pow(place) % 10;
            self.buffer.push(b'0' + digit as u8);
        }
    }

    /// RFC 3339 in UTC with microseconds, as tracing-subscriber prints it.
    fn timestamp(&mut self, now: SystemTime) {
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let second = since_epoch.as_secs();
        let text = match self.second {
            Some((cached, text)) if cached == second => text,
            _ => {
                let text = format_second(second);
                self.second = Some((second, text));
                text
            }
        };
        self.buffer.extend_from_slice(&text);
        self.fraction(u64::from(since_epoch.subsec_micros()), 6);
        self.push("Z");
    }

    fn json_string(&mut self, text: &str) {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.buffer, text);
    }
}

fn format_second(second: u64) -> [u8; SECOND_LEN] {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let mut text = [b'0'; SECOND_LEN];
    let at = i64::try_from(second)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok());
    if let Some(formatted) = at.and_then(|at| at.format(format).ok())
        && formatted.len() == SECOND_LEN
    {
        text.copy_from_slice(formatted.as_bytes());
    }
    text
}

/// A `Display` value as a JSON string.
struct DisplayString<'a>(&'a dyn Display);

impl serde::Serialize for DisplayString<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(error: Option<(&'static str, &'static dyn Display)>) -> Entry<'static> {
        Entry {
            method: "GET",
            host: "a.local",
            path: "/x\"y",
            status: 502,
            rule: "a.local",
            took: Duration::from_micros(12_345),
            served_by: "local",
            request_id: "QQCtFipSIAMEPNQ=",
            error,
        }
    }

    fn formatted(entry: &Entry<'_>, style: Style, level: Level, at: SystemTime) -> String {
        let mut lines = Lines::default();
        entry.format(style, level, at, &mut lines);
        String::from_utf8(std::mem::take(&mut lines.buffer)).unwrap()
    }

    const AT_MICROS: u64 = 1_584_039_838_000_042;

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(AT_MICROS)
    }

    #[test]
    fn text_lines_are_laid_out_as_tracing_lays_out_an_event() {
        let line = formatted(&entry(None), Style::Text, Level::INFO, at());
        assert_eq!(
            line,
            "2020-03-12T19:03:58.000042Z  INFO lrp::access: request method=GET host=a.local \
             path=/x\"y status=502 rule=a.local duration_ms=12.345 served_by=\"local\" \
             request_id=QQCtFipSIAMEPNQ=\n"
        );
        let cause: &dyn Display = &"the function failed: E: boom";
        let line = formatted(
            &entry(Some(("function-error", cause))),
            Style::Text,
            Level::WARN,
            at(),
        );
        assert!(line.contains(" WARN lrp::access: request "), "{line}");
        assert!(
            line.ends_with(" error=\"function-error\" cause=the function failed: E: boom\n"),
            "{line}"
        );
    }

    #[test]
    fn json_lines_are_objects_with_every_field() {
        let cause: &dyn Display = &"a \"quoted\"\nline";
        let line = formatted(
            &entry(Some(("function-error", cause))),
            Style::Json,
            Level::WARN,
            at(),
        );
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
        let record: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(record["timestamp"], "2020-03-12T19:03:58.000042Z");
        assert_eq!(record["level"], "WARN");
        assert_eq!(record["message"], "request");
        assert_eq!(record["target"], TARGET);
        assert_eq!(record["path"], "/x\"y");
        assert_eq!(record["status"], 502);
        assert_eq!(record["duration_ms"], 12.345);
        assert_eq!(record["served_by"], "local");
        assert_eq!(record["request_id"], "QQCtFipSIAMEPNQ=");
        assert_eq!(record["error"], "function-error");
        assert_eq!(record["cause"], "a \"quoted\"\nline");
    }

    #[test]
    fn the_second_is_formatted_once_and_the_fraction_always() {
        let mut lines = Lines::default();
        lines.timestamp(at());
        lines.timestamp(at() + Duration::from_micros(5));
        lines.timestamp(at() + Duration::from_secs(1));
        assert_eq!(
            String::from_utf8(std::mem::take(&mut lines.buffer)).unwrap(),
            "2020-03-12T19:03:58.000042Z2020-03-12T19:03:58.000047Z2020-03-12T19:03:59.000042Z"
        );
        assert_eq!(
            lines.second.map(|(s, _)| s),
            Some(AT_MICROS / 1_000_000 + 1)
        );
    }

    #[test]
    fn lines_wait_until_the_buffer_is_full_or_a_second_has_passed() {
        let mut lines = Lines::default();
        let short = |lines: &mut Lines| lines.push("a line\n");
        assert!(!lines.append(at(), short));
        assert!(!lines.append(at() + Duration::from_millis(900), short));
        assert!(
            lines.append(at() + Duration::from_secs(1), short),
            "the oldest line is from the second before"
        );
        lines.buffer.clear();
        lines.oldest = None;
        assert!(lines.append(at(), |lines| lines.push(&"x".repeat(FLUSH_BYTES))));
        lines.buffer.clear();
    }

    /// Lines held by this thread, and whether a task is waiting to write them. (The tests'
    /// lines are blank: they do reach standard error.)
    fn held() -> (usize, bool) {
        LINES.with_borrow(|lines| (lines.buffer.len(), lines.flush_waiting))
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_worker_writes_its_lines_once_the_delay_has_passed() {
        LINES.with_borrow_mut(|lines| lines.push("\n"));
        on_idle();
        on_idle();
        assert_eq!(held(), (1, true));
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        assert_eq!(tasks, 1, "a second idle call starts no second task");

        tokio::time::sleep(IDLE_FLUSH_DELAY - Duration::from_millis(1)).await;
        assert_eq!(held(), (1, true), "written before the delay");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(held(), (0, false));

        on_idle();
        assert_eq!(held(), (0, false), "nothing to write, no task");
    }

    #[test]
    fn lines_waiting_are_written_when_their_runtime_ends_and_outside_one_at_once() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            LINES.with_borrow_mut(|lines| lines.push("\n"));
            on_idle();
        });
        assert_eq!(held(), (1, true));
        drop(runtime);
        assert_eq!(held(), (0, false));

        LINES.with_borrow_mut(|lines| lines.push("\n"));
        on_idle();
        assert_eq!(held(), (0, false));
    }

    #[test]
    fn durations_keep_whole_microseconds() {
        let mut lines = Lines::default();
        lines.millis(Duration::from_nanos(1_999));
        lines.push(" ");
        lines.millis(Duration::from_secs(3));
        assert_eq!(
            String::from_utf8(std::mem::take(&mut lines.buffer)).unwrap(),
            "0.001 3000.000"
        );
    }
}
