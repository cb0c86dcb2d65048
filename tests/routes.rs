//! Path routes: a rule may take requests by path prefix (and methods) as well as, or instead
//! of, by host. Host first, then the longest prefix, then methods. Each rule here sends a
//! different event format to awslambdaric's echo handler, so each answer shows which rule
//! served it and what path its function saw.

mod common;

use common::{Lrp, python_rule, send};
use serde_json::Value;

fn echo_rule(route: &str, event: &str) -> String {
    python_rule(route, "echo_event", &format!("    event: {event}\n"))
}

#[tokio::test]
async fn host_first_then_the_longest_prefix_then_methods() {
    let lrp = Lrp::start(&format!(
        "local:\n{}{}{}",
        echo_rule(
            "hostname: api.test\n    path_prefix: /orders\n    methods: [POST]\n    strip_path_prefix: true",
            "http-api"
        ),
        echo_rule("hostname: api.test", "alb"),
        echo_rule("path_prefix: /orders", "rest"),
    ));
    let event = |reply: common::Reply| -> Value {
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    };

    // The exact host, its longest prefix, its method: payload 2.0, the prefix stripped.
    let v2 = event(send(lrp.request("POST", "api.test", "/orders/1?x=1"), "").await);
    assert_eq!(v2["version"], "2.0");
    assert_eq!(v2["rawPath"], "/1");
    assert_eq!(v2["rawQueryString"], "x=1");

    // Same host and path, another method: the host's catch-all rule, path as sent.
    let alb = event(send(lrp.request("GET", "api.test", "/orders/1"), "").await);
    assert!(alb["requestContext"]["elb"].is_object());
    assert_eq!(alb["path"], "/orders/1");

    // Another host: the rule for any host with that prefix.
    let rest = event(send(lrp.request("GET", "other.test", "/orders/1"), "").await);
    assert_eq!(rest["resource"], "/{proxy+}");
    assert_eq!(rest["path"], "/orders/1");
    let root = event(send(lrp.request("GET", "other.test", "/orders"), "").await);
    assert_eq!(root["path"], "/orders");

    // Nothing takes this one.
    let reply = send(lrp.request("GET", "other.test", "/ordersx"), "").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("x-lrp-error"), Some("no-rule"));
}
