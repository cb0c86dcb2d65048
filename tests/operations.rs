//! Running lrp in production: the health check command, Prometheus metrics, reloading the
//! configuration on SIGHUP, and /healthz during shutdown.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::fake_rie::FakeRie;
use common::{Lrp, free_port, lrp_command, send};

fn write(path: &Path, text: &str) {
    let mut file = std::fs::File::create(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// A configuration file of local rules that a test rewrites before sending SIGHUP.
struct RulesFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl RulesFile {
    fn new(rules: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = RulesFile {
            path: dir.path().join("lrp.yaml"),
            _dir: dir,
        };
        file.rewrite(rules);
        file
    }

    fn rewrite(&self, rules: &str) {
        write(
            &self.path,
            &format!("host: 127.0.0.1\nport: 0\nlocal:\n{rules}"),
        );
    }
}

fn healthcheck(args: &[&str], env: &[(&str, &Path)]) -> (bool, String) {
    let output = lrp_command()
        .arg("healthcheck")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn healthcheck_follows_the_configured_port_and_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lrp.yaml");
    let port = free_port();
    write(
        &config,
        &format!("host: 127.0.0.1\nport: {port}\ninternal_route_prefix: __lrp__\n"),
    );
    let lrp = Lrp::start_file(&config);
    assert_eq!(lrp.addr.port(), port);

    let path = config.to_str().unwrap();
    assert!(healthcheck(&[path], &[]).0);
    assert!(
        healthcheck(&[], &[("LRP_CONFIG", &config)]).0,
        "the server's own source"
    );

    // The same port without the prefix is a function's route (here: no rule, 404).
    let wrong = dir.path().join("wrong.yaml");
    write(&wrong, &format!("host: 127.0.0.1\nport: {port}\n"));
    let (healthy, why) = healthcheck(&[wrong.to_str().unwrap()], &[]);
    assert!(!healthy);
    assert!(why.contains("404"), "{why}");

    drop(lrp);
    let (healthy, why) = healthcheck(&[path, "--timeout", "1s"], &[]);
    assert!(!healthy, "nothing listens any more");
    assert!(why.contains("unhealthy"), "{why}");
}

#[tokio::test]
async fn metrics_count_requests_latency_errors_and_queues() {
    let fake = FakeRie::start().await;
    let lrp = Lrp::start(&format!(
        "internal_route_prefix: ops\nlocal:\n{}",
        fake.rule("echo.test", "echo", "")
    ));
    let metrics = || async { send(lrp.request("GET", "any", "/ops/metrics"), "").await };
    let before = metrics().await;
    assert_eq!(before.status, 200);
    assert!(
        before
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(
        before.text().contains("process_start_time_seconds"),
        "{}",
        before.text()
    );

    for _ in 0..2 {
        assert_eq!(
            send(lrp.request("GET", "echo.test", "/"), "").await.status,
            200
        );
    }
    assert_eq!(
        send(lrp.request("GET", "nobody.test", "/"), "")
            .await
            .status,
        404
    );

    let text = metrics().await.text();
    for line in [
        r#"lrp_requests_total{rule="echo.test",status="2xx"} 2"#,
        r#"lrp_requests_total{rule="-",status="4xx"} 1"#,
        r#"lrp_errors_total{kind="no-rule"} 1"#,
        r#"lrp_invocation_duration_seconds_count{rule="echo.test"} 2"#,
        r#"lrp_in_flight_invocations{rule="echo.test"} 0"#,
        r#"lrp_queued_invocations{rule="echo.test"} 0"#,
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[tokio::test]
async fn sighup_applies_a_good_file_rejects_a_bad_one_and_spares_requests_in_flight() {
    let fake = FakeRie::start().await;
    let config = RulesFile::new(&fake.rule("a.test", "echo", ""));
    let lrp = Lrp::start_file(&config.path);
    assert_eq!(
        send(lrp.request("GET", "a.test", "/"), "").await.status,
        200
    );

    // A good file: the new rule serves, the removed one is gone.
    config.rewrite(&fake.rule("b.test", "slow", ""));
    lrp.process.signal("HUP");
    lrp.expect_log("SIGHUP: reloaded").await;
    assert_eq!(
        send(lrp.request("GET", "b.test", "/"), "").await.status,
        200
    );
    assert_eq!(
        send(lrp.request("GET", "a.test", "/"), "").await.status,
        404
    );

    // A bad file: rejected with a log line, and the running rules stay.
    config.rewrite("  - hostname: broken\n");
    lrp.process.signal("HUP");
    lrp.expect_log("keeping the running rules").await;
    assert!(lrp.logs().contains("give an endpoint"), "{}", lrp.logs());
    assert_eq!(
        send(lrp.request("GET", "b.test", "/"), "").await.status,
        200
    );

    // A request in flight finishes on the table it started with.
    let in_flight = tokio::spawn(send(lrp.request("GET", "b.test", "/"), ""));
    tokio::time::sleep(Duration::from_millis(100)).await;
    config.rewrite(&fake.rule("c.test", "echo", ""));
    lrp.process.signal("HUP");
    let reply = in_flight.await.unwrap();
    assert_eq!((reply.status, reply.text().as_str()), (200, "slow"));
    assert_eq!(
        send(lrp.request("GET", "c.test", "/"), "").await.status,
        200
    );
    assert_eq!(
        send(lrp.request("GET", "b.test", "/"), "").await.status,
        404
    );
}

#[tokio::test]
async fn a_listen_address_change_is_reported_as_needing_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lrp.yaml");
    write(&config, "host: 127.0.0.1\nport: 0\n");
    let lrp = Lrp::start_file(&config);
    write(
        &config,
        &format!("host: 127.0.0.1\nport: {}\n", free_port()),
    );
    lrp.process.signal("HUP");
    lrp.expect_log("takes a restart").await;
    assert_eq!(send(lrp.request("GET", "x", "/ping"), "").await.status, 200);
}

#[tokio::test]
async fn during_shutdown_healthz_answers_503_while_requests_are_still_served() {
    let fake = FakeRie::start().await;
    let mut lrp = Lrp::start(&format!(
        "shutdown_delay: 1s\nlocal:\n{}",
        fake.rule("echo.test", "echo", "")
    ));
    assert_eq!(
        send(lrp.request("GET", "x", "/healthz"), "").await.status,
        200
    );
    let signalled = Instant::now();
    lrp.process.signal("TERM");
    lrp.expect_log("/healthz now answers 503").await;
    let reply = send(lrp.request("GET", "x", "/healthz"), "").await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (503, "shutting down")
    );
    assert_eq!(
        send(lrp.request("GET", "x", "/ping"), "").await.status,
        200,
        "still alive"
    );
    assert_eq!(
        send(lrp.request("GET", "echo.test", "/"), "").await.status,
        200,
        "still serving"
    );
    let status = lrp
        .process
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("lrp exits");
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() >= Duration::from_millis(900),
        "it waited the shutdown_delay"
    );
}

#[tokio::test]
async fn a_reload_keeps_an_endpoints_concurrency_limit_across_tables() {
    let fake = FakeRie::start().await;
    let config = RulesFile::new(&fake.rule("old.test", "gated", ""));
    let lrp = Lrp::start_file(&config.path);
    let in_flight = tokio::spawn(send(lrp.request("GET", "old.test", "/"), ""));
    fake.counters.wait_in_flight(1).await;

    // The same endpoint under a new name and with new limits: its one slot is still taken
    // by the old table's invocation, so the new request waits instead of reaching RIE
    // concurrently.
    config.rewrite(&fake.rule("new.test", "gated", "    max_queue: 7\n"));
    lrp.process.signal("HUP");
    lrp.expect_log("SIGHUP: reloaded").await;
    let waiting = tokio::spawn(send(lrp.request("GET", "new.test", "/"), ""));
    lrp.wait_metric(r#"lrp_queued_invocations{rule="new.test"}"#, 1)
        .await;
    assert_eq!(
        fake.counters
            .calls
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    fake.counters.open_gate(2);
    assert_eq!(waiting.await.unwrap().status, 200);
    assert_eq!(in_flight.await.unwrap().status, 200);
    assert_eq!(
        fake.counters
            .max_in_flight
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}
