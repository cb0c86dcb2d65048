//! docker-compose.yaml and the Dockerfile agree with the configuration they ship. (This machine
//! has no Docker engine, so the stack is checked here and the image is linted in CI.)

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{Lrp, send, tool};
use lrp::config::{Config, TargetConfig};
use serde_yaml::Value;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compose() -> Value {
    let text = std::fs::read_to_string(repository().join("docker-compose.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The configuration file the proxy service mounts at /etc/lrp.yaml.
fn mounted_config(proxy: &Value) -> PathBuf {
    let mount = strings(&proxy["volumes"])
        .into_iter()
        .find(|v| v.split(':').nth(1) == Some("/etc/lrp.yaml"))
        .expect("the proxy mounts a configuration at /etc/lrp.yaml");
    repository().join(mount.split(':').next().unwrap())
}

#[test]
fn the_proxys_aliases_are_exactly_the_hostnames_of_the_config_it_mounts() {
    let compose = compose();
    let proxy = &compose["services"]["proxy"];
    let aliases: BTreeSet<String> = strings(&proxy["networks"]["default"]["aliases"])
        .into_iter()
        .collect();
    let config = Config::from_file(&mounted_config(proxy)).expect("the mounted file is valid");
    let hostnames: BTreeSet<String> = config.rules.iter().map(|r| r.route.to_string()).collect();
    assert!(!aliases.is_empty());
    assert_eq!(aliases, hostnames);
    assert_eq!((config.host.as_str(), config.port), ("0.0.0.0", 8080));
}

#[test]
fn every_endpoint_is_a_service_the_proxy_waits_for_until_healthy() {
    let compose = compose();
    let services = &compose["services"];
    let proxy = &services["proxy"];
    let config = Config::from_file(&mounted_config(proxy)).unwrap();
    for rule in &config.rules {
        let TargetConfig::Rie(rie) = &rule.target else {
            panic!("{} is not an endpoint rule", rule.route)
        };
        let service = rie.invoke_uri.host().unwrap();
        assert!(
            services[service].is_mapping(),
            "{service} is not a compose service"
        );
        assert_eq!(
            proxy["depends_on"][service]["condition"].as_str(),
            Some("service_healthy"),
            "{service}"
        );
        assert!(
            services[service]["healthcheck"]["test"].is_sequence(),
            "{service}"
        );
        assert_eq!(rie.invoke_uri.port_u16(), Some(8080), "RIE listens on 8080");
    }
}

#[test]
fn the_image_health_check_reads_the_file_compose_mounts() {
    let dockerfile = std::fs::read_to_string(repository().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/lrp"]"#));
    assert!(
        dockerfile.contains(r#"CMD ["/lrp", "healthcheck"]"#),
        "exec form, no shell"
    );
    assert!(dockerfile.contains("ENV LRP_CONFIG=/etc/lrp.yaml"));
    assert!(dockerfile.contains("USER 65532:65532"), "not root");
    assert!(dockerfile.contains("--locked"));
}

#[tokio::test]
async fn the_compose_function_answers_through_lrp() {
    // The same code the Lambda base image runs, here on awslambdaric as a command target.
    let function_dir = repository().join("compose/functions/greeter");
    let lrp = Lrp::start(&format!(
        "local:\n  - hostname: foo.domain.lb\n    command: [{:?}, \"-m\", \"awslambdaric\", \"app.handler\"]\n    \
         working_dir: {:?}\n    env: {{GREETING: hi}}\n",
        tool("python").display().to_string(),
        Path::new(&function_dir).display().to_string(),
    ));
    let reply = send(lrp.request("GET", "foo.domain.lb", "/hello?x=1"), "").await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), lrp.logs());
    let body = reply.json();
    assert_eq!(body["greeting"], "hi");
    assert_eq!(body["path"], "/hello");
    assert_eq!(body["query"]["x"], "1");
}
