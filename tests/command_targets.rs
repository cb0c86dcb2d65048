//! `command` targets: the real lrp binary runs real runtimes itself (awslambdaric from PyPI,
//! the Rust lambda_runtime crate, a bash custom runtime) and serves them the Runtime API.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Lrp, eventually, example_binary, python_rule, send};
use serde_json::{Value, json};

fn peers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

fn bash_rule(hostname: &str, extra: &str) -> String {
    format!(
        "  - hostname: {hostname}\n    command: [{:?}]\n{extra}",
        peers().join("bash_runtime.sh").display().to_string()
    )
}

fn process_exists(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn pid_of(reply: &common::Reply) -> u64 {
    reply.json()["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid in {}", reply.text()))
}

#[tokio::test]
async fn awslambdaric_gets_events_and_the_environment_lambda_gives() {
    let lrp = Lrp::start(&format!(
        "region: us-west-2\nlocal:\n{}",
        python_rule(
            "hostname: hello.test",
            "handler",
            "    env: {GREETING: hi, AWS_LAMBDA_FUNCTION_MEMORY_SIZE: 512}\n    handler: python_function.handler\n    timeout: 7s\n",
        )
    ));
    let reply = send(lrp.request("GET", "hello.test", "/greet?name=you"), "").await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), lrp.logs());
    assert_eq!(reply.header("x-function"), Some("python"));
    let body = reply.json();
    assert_eq!(body["event"]["rawPath"], "/greet");
    assert_eq!(
        body["event"]["queryStringParameters"],
        json!({"name": "you"})
    );
    assert_eq!(body["function_name"], "hello");
    assert_eq!(
        body["request_id"].as_str().map(str::len),
        Some(36),
        "a UUID"
    );
    let remaining = body["remaining_ms"].as_u64().unwrap();
    assert!(
        (5_000..=7_000).contains(&remaining),
        "deadline from the timeout: {remaining}"
    );
    let env = &body["env"];
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "hello");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "$LATEST");
    assert_eq!(
        env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "512",
        "a rule's env wins"
    );
    assert_eq!(env["AWS_LAMBDA_FUNCTION_TIMEOUT"], "7");
    assert_eq!(env["AWS_REGION"], "us-west-2");
    assert_eq!(env["_HANDLER"], "python_function.handler");
    assert_eq!(env["TZ"], ":UTC");
    assert_eq!(env["GREETING"], "hi");
    assert_eq!(env["LAMBDA_TASK_ROOT"], peers().display().to_string());
    assert!(
        env["AWS_LAMBDA_RUNTIME_API"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );

    // The same warm instance serves the next request.
    let again = send(lrp.request("GET", "hello.test", "/"), "").await;
    assert_eq!(pid_of(&again), body["pid"].as_u64().unwrap());
    lrp.expect_log("started an instance").await;
}

#[tokio::test]
async fn handler_errors_are_500_and_the_instance_stays() {
    let lrp = Lrp::start(&format!(
        "local:\n{}",
        python_rule("hostname: py.test", "handler", "")
    ));
    let first = pid_of(&send(lrp.request("GET", "py.test", "/"), "").await);
    let reply = send(lrp.request("GET", "py.test", "/error"), "").await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.json(), json!({"message": "Internal Server Error"}));
    assert_eq!(reply.header("x-lrp-error"), Some("function-error"));
    lrp.expect_log("ValueError: boom from python").await;
    // An error whose report carries a 600 KB header (its X-Ray cause) is reported the same.
    let reply = send(lrp.request("GET", "py.test", "/error/large"), "").await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.header("x-lrp-error"), Some("function-error"));
    lrp.expect_log("ValueError: large xxx").await;
    let after = pid_of(&send(lrp.request("GET", "py.test", "/"), "").await);
    assert_eq!(first, after, "{}", lrp.logs());
}

#[tokio::test]
async fn a_timed_out_instance_is_killed_reaped_and_replaced() {
    let lrp = Lrp::start(&format!(
        "local:\n{}",
        python_rule("hostname: slow.test", "handler", "    timeout: 1s\n")
    ));
    let first = pid_of(&send(lrp.request("GET", "slow.test", "/"), "").await);
    let reply = send(lrp.request("GET", "slow.test", "/sleep/5000"), "").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("x-lrp-error"), Some("timeout"));
    // Gone, not a zombie: lrp reaped it while still running.
    eventually(
        "the timed-out instance is gone",
        Duration::from_secs(5),
        || !process_exists(first),
    )
    .await;
    let replacement = pid_of(&send(lrp.request("GET", "slow.test", "/"), "").await);
    assert_ne!(replacement, first);
}

#[tokio::test]
async fn a_crash_mid_invocation_is_a_runtime_exit_error_and_replaced() {
    let lrp = Lrp::start(&format!(
        "local:\n{}",
        python_rule("hostname: crash.test", "handler", "")
    ));
    let first = pid_of(&send(lrp.request("GET", "crash.test", "/"), "").await);
    let reply = send(lrp.request("GET", "crash.test", "/exit"), "").await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.header("x-lrp-error"), Some("function-error"));
    lrp.expect_log("Runtime.ExitError").await;
    let replacement = pid_of(&send(lrp.request("GET", "crash.test", "/"), "").await);
    assert_ne!(replacement, first);
    eventually(
        "the crashed instance is reaped",
        Duration::from_secs(5),
        || !process_exists(first),
    )
    .await;
}

#[tokio::test]
async fn concurrency_n_runs_n_instances_in_parallel() {
    let lrp = Lrp::start(&format!(
        "local:\n{}",
        python_rule("hostname: wide.test", "handler", "    concurrency: 3\n")
    ));
    // Start three instances, then time three slow invocations on them.
    let warm = (0..3).map(|_| send(lrp.request("GET", "wide.test", "/sleep/300"), ""));
    let pids: std::collections::HashSet<u64> = futures::future::join_all(warm)
        .await
        .iter()
        .map(pid_of)
        .collect();
    assert_eq!(pids.len(), 3, "three instances");
    // Each waits for the other two to arrive: all succeed only if the three run at once.
    let dir = tempfile::tempdir().unwrap();
    let path = format!("/barrier/3?dir={}", dir.path().display());
    let barrier = (0..3).map(|_| send(lrp.request("GET", "wide.test", &path), ""));
    for reply in futures::future::join_all(barrier).await {
        assert_eq!((reply.status, reply.text().as_str()), (200, "all arrived"));
    }
}

#[tokio::test]
async fn the_rust_lambda_runtime_works_as_a_command() {
    let lrp = Lrp::start(&format!(
        "local:\n  - hostname: rust.test\n    command: [{:?}]\n",
        example_binary("rust-function").display().to_string()
    ));
    let reply = send(lrp.request("POST", "rust.test", "/items?x=1"), "hello").await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), lrp.logs());
    let event = reply.json();
    assert_eq!(event["rawPath"], "/items");
    assert_eq!(event["body"], "aGVsbG8=", "no content-type: base64");
    let reply = send(lrp.request("GET", "rust.test", "/error"), "").await;
    assert_eq!(reply.status, 500);
    let reply = send(
        lrp.request("POST", "rust.test", "/respond")
            .header("content-type", "application/json"),
        r#"{"statusCode": 418, "cookies": ["a=1", "b=2"], "body": "teapot"}"#,
    )
    .await;
    assert_eq!(reply.status, 418);
    assert_eq!(reply.all("set-cookie"), ["a=1", "b=2"]);
    assert_eq!(reply.text(), "teapot");
}

#[tokio::test]
async fn a_bash_runtime_and_the_runtime_apis_answers_to_misuse() {
    let lrp = Lrp::start(&format!(
        "local:\n{}",
        bash_rule("bash.test", "    timeout: 5s\n")
    ));
    let reply = send(lrp.request("GET", "bash.test", "/"), "").await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), lrp.logs());
    let text = reply.text();
    let deadline: u64 = text
        .split("deadline=")
        .nth(1)
        .and_then(|d| d.trim().parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        deadline > now_ms && deadline <= now_ms + 5_000,
        "Deadline-Ms is epoch ms"
    );

    let reply = send(lrp.request("GET", "bash.test", "/error"), "").await;
    assert_eq!(reply.status, 500);
    lrp.expect_log("BashError: boom from bash").await;

    let reply = send(lrp.request("GET", "bash.test", "/misuse"), "").await;
    assert_eq!(reply.text(), "first");
    let output = &lrp.process.output;
    for expected in [
        "wrong-id-status=400",
        "first-status=202",
        "second-status=403",
    ] {
        assert!(
            output
                .line_with(expected, Duration::from_secs(3))
                .await
                .is_some(),
            "{expected}\n{}",
            lrp.logs()
        );
    }

    let reply = send(lrp.request("GET", "bash.test", "/big"), "").await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.header("x-lrp-error"), Some("result-too-large"));
    assert!(
        output
            .line_with("big-status=413", Duration::from_secs(3))
            .await
            .is_some(),
        "{}",
        lrp.logs()
    );
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let lrp = Lrp::start(&format!(
        "local:\n{}",
        bash_rule("orphan.test", "    timeout: 1s\n")
    ));
    let reply = send(lrp.request("GET", "orphan.test", "/orphan"), "").await;
    assert_eq!(reply.status, 503);
    let marker_alive = || {
        std::process::Command::new("pgrep")
            .args(["-f", "lrp-test-orphan-marker"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    eventually(
        "the runtime's own child is killed too",
        Duration::from_secs(5),
        || !marker_alive(),
    )
    .await;
}

#[tokio::test]
async fn an_init_error_is_reported_and_not_retried_in_a_hot_loop() {
    let lrp = Lrp::start(&format!(
        "local:\n{}",
        python_rule("hostname: init.test", "no_such_handler", "")
    ));
    let reply = send(lrp.request("GET", "init.test", "/"), "").await;
    assert_eq!(reply.status, 500, "{}", lrp.logs());
    lrp.expect_log("Runtime.HandlerNotFound").await;
    // Within the back-off, the next request fails without starting a process.
    let reply = send(lrp.request("GET", "init.test", "/"), "").await;
    assert_eq!(reply.status, 500);
    lrp.expect_log("the last start failed; retrying in").await;
    assert_eq!(
        lrp.logs().matches("started an instance").count(),
        1,
        "{}",
        lrp.logs()
    );
}

#[tokio::test]
async fn a_runtime_that_reports_an_init_error_and_keeps_running_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let lrp = Lrp::start(&format!(
        "local:\n  - hostname: linger.test\n    command: [{:?}]\n    env: {{PID_FILE: {:?}}}\n",
        peers()
            .join("init_error_then_linger.sh")
            .display()
            .to_string(),
        pid_file.display().to_string(),
    ));
    let reply = send(lrp.request("GET", "linger.test", "/"), "").await;
    assert_eq!(reply.status, 500, "{}", lrp.logs());
    lrp.expect_log("Runtime.Lingering").await;
    let pid: u64 = std::fs::read_to_string(&pid_file)
        .expect("the runtime started and wrote its pid")
        .trim()
        .parse()
        .unwrap();
    eventually(
        "the runtime that reported an init error is killed",
        Duration::from_secs(5),
        || !process_exists(pid),
    )
    .await;
}

#[tokio::test]
async fn a_missing_program_is_a_clear_500() {
    let lrp =
        Lrp::start("local:\n  - hostname: missing.test\n    command: [\"/no/such/runtime\"]\n");
    let reply = send(lrp.request("GET", "missing.test", "/"), "").await;
    assert_eq!(reply.status, 500);
    lrp.expect_log("Runtime.InvalidEntrypoint").await;
}

#[tokio::test]
async fn sigterm_stops_every_instance_and_leaves_no_process() {
    let mut lrp = Lrp::start(&format!(
        "local:\n{}",
        python_rule("hostname: stop.test", "handler", "    concurrency: 2\n")
    ));
    let replies = futures::future::join_all(
        (0..2).map(|_| send(lrp.request("GET", "stop.test", "/sleep/300"), "")),
    )
    .await;
    let pids: Vec<u64> = replies.iter().map(pid_of).collect();
    assert!(pids.iter().all(|&pid| process_exists(pid)));
    lrp.process.signal("TERM");
    let status = lrp
        .process
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("lrp exits");
    assert_eq!(status.code(), Some(0), "{}", lrp.logs());
    eventually("no instance outlives lrp", Duration::from_secs(5), || {
        pids.iter().all(|&pid| !process_exists(pid))
    })
    .await;
}

#[test]
fn command_and_endpoint_are_exclusive_and_checked() {
    let check = |rules: &str| {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, rules.as_bytes()).unwrap();
        let output = common::lrp_command()
            .arg("check")
            .arg(file.path())
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (ok, text) = check("local:\n  - hostname: a\n    endpoint: http://a:1\n    command: [x]\n");
    assert!(
        !ok && text.contains(
            ":2:3: local: the rule for a (local[0]): give either endpoint or command, not both"
        ),
        "{text}"
    );
    let (ok, text) = check("local:\n  - hostname: a\n");
    assert!(!ok && text.contains("give an endpoint"), "{text}");
    let (ok, text) = check("local:\n  - hostname: a\n    endpoint: http://a:1\n    env: {A: b}\n");
    assert!(
        !ok && text.contains("env applies to command rules only"),
        "{text}"
    );
    let (ok, text) =
        check("local:\n  - hostname: a\n    command: [x]\n    working_dir: /no/such/dir\n");
    assert!(
        !ok && text.contains("local[0].working_dir: /no/such/dir is not a directory"),
        "{text}"
    );
    let (ok, text) = check(&format!("local:\n{}", bash_rule("b.example", "")));
    assert!(ok, "{text}");
    assert!(text.contains("b.example -> command"), "{text}");
    assert!(
        text.contains("(function b, event http-api, concurrency 1, max_queue 100, timeout 30s)"),
        "{text}"
    );
}

#[tokio::test]
async fn the_readme_quick_start_answers_from_both_example_functions() {
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("lrp.example.yaml"))
            .unwrap()
            .replace("port: 8080", "port: 0")
            .replace("lambda_api_port: 9001", "lambda_api_port: 0");
    // Run it from the repository root, as the README does, with relative working_dirs.
    let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    let config = dir.path().join("lrp.yaml");
    std::fs::write(
        &config,
        example.replace("working_dir: examples/", "working_dir: ../examples/"),
    )
    .unwrap();
    let lrp = Lrp::start_file(&config);
    let reply = send(
        lrp.request("GET", "hello.localhost:8080", "/greet?name=you"),
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), lrp.logs());
    let body: Value = reply.json();
    assert_eq!(body["message"], "Hello, you!");
    assert_eq!(body["path"], "/greet");
    assert_eq!(body["function"], "hello");
    assert_eq!(reply.all("set-cookie"), ["visited=you; Path=/"]);
    let reply = send(lrp.request("GET", "bash.localhost", "/any/path"), "").await;
    assert_eq!(reply.status, 200, "{}", lrp.logs());
    assert_eq!(reply.text(), "Hello from bash! You asked for /any/path\n");
}

#[tokio::test]
async fn idle_instances_are_stopped_after_idle_timeout_and_started_again_on_demand() {
    let lrp = Lrp::start(&format!(
        "local:\n{}",
        python_rule(
            "hostname: idle.test",
            "handler",
            "    idle_timeout: 300ms\n"
        )
    ));
    let first = pid_of(&send(lrp.request("GET", "idle.test", "/"), "").await);
    lrp.expect_log("stopping instances idle for").await;
    eventually(
        "the idle instance is stopped",
        Duration::from_secs(5),
        || !process_exists(first),
    )
    .await;
    let second = pid_of(&send(lrp.request("GET", "idle.test", "/"), "").await);
    assert_ne!(first, second);
}

#[tokio::test]
async fn lrp_raises_its_open_file_limit_and_functions_get_the_one_it_started_with() {
    let limits = |pid: u32| {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no open-file limit in\n{limits}"));
        let numbers: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        (numbers[3].clone(), numbers[4].clone())
    };
    let (_, hard) = limits(std::process::id());
    assert!(
        hard == "unlimited" || hard.parse::<u64>().is_ok_and(|hard| hard > 256),
        "the test needs a hard open-file limit above 256, not {hard}"
    );
    // The shell lowers the soft limit, then becomes lrp.
    let command = common::lrp_after_shell("ulimit -Sn 256");
    let lrp = Lrp::start_command(command, &format!("local:\n{}", bash_rule("files.test", "")));
    assert_eq!(limits(lrp.process.child.id()), (hard.clone(), hard));

    let reply = send(lrp.request("GET", "files.test", "/open-files"), "").await;
    assert_eq!(reply.text(), "open-files=256", "{}", lrp.logs());
}

#[tokio::test]
async fn functions_run_as_batch_work_and_lrp_keeps_its_own_policy() {
    // Field 41 of /proc/PID/stat (proc(5)); comm, field 2, holds no space for these processes.
    const SCHED_OTHER: &str = "0";
    const SCHED_BATCH: &str = "3";
    // `None` for a thread that has exited since it was listed.
    let policy_of = |stat: &std::path::Path| {
        let stat = std::fs::read_to_string(stat).ok()?;
        stat.split_whitespace().nth(40).map(str::to_owned)
    };
    let lrp = Lrp::start(&format!("local:\n{}", bash_rule("sched.test", "")));

    let reply = send(lrp.request("GET", "sched.test", "/sched-policy"), "").await;
    assert_eq!(reply.status, 200, "{}", lrp.logs());
    assert_eq!(
        reply.text(),
        format!("policy={SCHED_BATCH}"),
        "{}",
        lrp.logs()
    );

    let tasks = format!("/proc/{}/task", lrp.process.child.id());
    let threads: Vec<_> = std::fs::read_dir(&tasks).unwrap().flatten().collect();
    assert!(threads.len() > 1, "lrp runs worker threads");
    let policies: Vec<_> = threads
        .iter()
        .filter_map(|thread| policy_of(&thread.path().join("stat")))
        .collect();
    assert!(!policies.is_empty(), "no lrp thread could be read");
    assert!(policies.iter().all(|p| p == SCHED_OTHER), "{policies:?}");
}
