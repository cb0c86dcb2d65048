//! The configuration file: YAML in, a validated [`Config`] out.
//!
//! The file format is a superset of the original Go tool's `lrp.yaml`, so every key it accepted
//! (`region`, `host`, `port`, `internal_route_prefix`, `local`, `aws`) means the same here.
//! Validation happens while deserializing, so serde_yaml can point at the line and column of the
//! offending value and name the rule it belongs to (`local[1].endpoint`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::event::{Format, RestOptions};
use crate::router::{HostPattern, RouteKey};

/// HTTP API's integration timeout limit, the default for every rule.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The function name the Runtime Interface Emulator requires in the invoke path.
pub const DEFAULT_RIE_FUNCTION_NAME: &str = "function";
/// The Go tool's region, for functions lrp runs itself when the file names none.
pub const DEFAULT_REGION: &str = "eu-central-1";
/// Invocations that may wait for a free slot, per function.
pub const DEFAULT_MAX_QUEUE: usize = 100;
/// The stage of REST events when a rule names none: SAM's default stage name, so a function
/// tested with `sam local` sees the same.
pub const DEFAULT_REST_STAGE: &str = "Prod";
/// Open client connections; past it lrp stops accepting until one closes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// How long a client connection may stay open with no request in flight (ALB's default).
pub const DEFAULT_CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MEMORY_SIZE: u32 = 128;

// Every number in the file is range-checked, so none can overflow a deadline or a counter.
/// Lambda's longest function timeout (15 minutes).
const MAX_TIMEOUT_SECS: u64 = 900;
/// An instance kept idle at most a day.
const MAX_IDLE_TIMEOUT_SECS: u64 = 86_400;
/// ALB's largest connection idle timeout.
const MAX_CONNECTION_IDLE_SECS: u64 = 4_000;
/// Lambda's default account concurrency.
const MAX_CONCURRENCY: u64 = 1_000;
const MAX_QUEUE: u64 = 10_000;
const MAX_CONNECTIONS: u64 = 1_000_000;
/// Lambda's memory sizes, in MB.
const MEMORY_SIZES: (u64, u64) = (128, 10_240);
const DEFAULT_HOST: &str = "0.0.0.0";
const DEFAULT_PORT: u16 = 8080;

/// A validated configuration, ready to serve.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `region` as written in the file; `None` lets the AWS SDK's region chain decide.
    pub region: Option<String>,
    pub host: String,
    pub port: u16,
    /// The port of the Lambda Invoke API listener (on `host`), if any.
    pub lambda_api_port: Option<u16>,
    /// `""` or a path prefix such as `/__lrp` (always with one leading slash, no trailing one).
    pub internal_route_prefix: String,
    /// After a shutdown signal, how long lrp keeps serving (with `/healthz` answering 503)
    /// before it stops accepting connections.
    pub shutdown_delay: Duration,
    /// Open client connections at most; lrp stops accepting while it has this many.
    pub max_connections: usize,
    /// A client connection with no request in flight for this long is closed.
    pub connection_idle_timeout: Duration,
    pub rules: Vec<Rule>,
}

/// What requests a rule takes (host, path prefix, methods), and the function they lead to.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub route: RouteKey,
    /// The function sees the path without the rule's `path_prefix`.
    pub strip_path_prefix: bool,
    pub target: TargetConfig,
    pub timeout: Duration,
    /// The event format the function receives, and whose answers the client gets.
    pub event: Format,
    /// A function on AWS that serves a local rule's requests when its queue is full or its
    /// endpoint is unreachable.
    pub overflow: Option<Overflow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Overflow {
    pub function: AwsConfig,
    /// How long an overflowing request may take on AWS; the rule's remaining time if unset.
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TargetConfig {
    /// An RIE-compatible invoke endpoint reached over HTTP.
    Rie(RieConfig),
    /// A function whose runtime lrp starts itself and serves the Runtime API.
    Command(CommandConfig),
    /// AWS Lambda's Invoke API.
    Aws(AwsConfig),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RieConfig {
    /// `{endpoint}/2015-03-31/functions/{function_name}/invocations`.
    pub invoke_uri: Uri,
    pub concurrency: usize,
    pub max_queue: usize,
}

impl RieConfig {
    /// The function name in the invoke path.
    pub fn function_name(&self) -> &str {
        let path = self.invoke_uri.path();
        path.strip_prefix("/2015-03-31/functions/")
            .and_then(|rest| rest.strip_suffix("/invocations"))
            .unwrap_or(DEFAULT_RIE_FUNCTION_NAME)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommandConfig {
    /// The name the function is told it has (`AWS_LAMBDA_FUNCTION_NAME`).
    pub function_name: String,
    pub command: Vec<String>,
    /// Absolute; relative paths in the file are relative to the file's directory.
    pub working_dir: PathBuf,
    pub env: Vec<(String, String)>,
    pub handler: Option<String>,
    /// The most instances running at once.
    pub concurrency: usize,
    pub max_queue: usize,
    pub idle_timeout: Option<Duration>,
    pub memory_size: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AwsConfig {
    pub function_name: String,
    pub qualifier: Option<String>,
    pub region: Option<String>,
    /// `invoke_mode: response_stream`: call `InvokeWithResponseStream` and stream the answer.
    pub response_stream: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{location} {message}")]
    Invalid {
        path: String,
        /// `line:column:` when the YAML parser knows where the problem is.
        location: String,
        /// What is wrong, led by the rule at fault (`local[1].endpoint: …`).
        message: String,
    },
}

impl Config {
    /// A proxy with no rules: internal routes answer, everything else is 404 (the Go tool's
    /// behaviour when it has nothing to route).
    pub fn empty() -> Self {
        Config {
            region: None,
            host: DEFAULT_HOST.to_owned(),
            port: DEFAULT_PORT,
            lambda_api_port: None,
            internal_route_prefix: String::new(),
            shutdown_delay: Duration::ZERO,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connection_idle_timeout: DEFAULT_CONNECTION_IDLE_TIMEOUT,
            rules: Vec::new(),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: display.clone(),
            source,
        })?;
        Self::from_yaml(&text, &display)
    }

    /// Parses and validates a whole file. `origin` names the file in error messages.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        // An empty file (or one holding only comments) is an empty configuration.
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            return Ok(Self::empty());
        }
        let _scope = ParseScope::install();
        let file: FileConfig = serde_yaml::from_str(text).map_err(|err| {
            // serde_yaml's message already names the rule (`local[1].endpoint: …`) and ends
            // with " at line N column M"; the position moves to the front, compiler style.
            let location = err
                .location()
                .map(|l| format!("{}:{}:", l.line(), l.column()))
                .unwrap_or_default();
            let mut message = err.to_string();
            if let Some(cut) = message.find(" at line ") {
                message.truncate(cut);
            }
            ConfigError::Invalid {
                path: origin.to_owned(),
                location,
                message,
            }
        })?;
        let base_dir = Path::new(origin).parent().unwrap_or(Path::new(""));
        file.validate(base_dir)
            .map_err(|(rule, message)| ConfigError::Invalid {
                path: origin.to_owned(),
                location: String::new(),
                message: format!("{rule}: {message}"),
            })
    }
}

impl fmt::Display for Config {
    /// The resolved rule table, as `lrp check` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "listen: {}:{}", self.host, self.port)?;
        let prefix = if self.internal_route_prefix.is_empty() {
            "(none)"
        } else {
            &self.internal_route_prefix
        };
        writeln!(f, "internal_route_prefix: {prefix}")?;
        writeln!(
            f,
            "shutdown_delay: {}",
            humantime::format_duration(self.shutdown_delay)
        )?;
        writeln!(
            f,
            "max_connections: {}\nconnection_idle_timeout: {}",
            self.max_connections,
            humantime::format_duration(self.connection_idle_timeout)
        )?;
        if let Some(port) = self.lambda_api_port {
            writeln!(f, "lambda_api: {}:{port}", self.host)?;
        }
        writeln!(
            f,
            "region: {}",
            self.region.as_deref().unwrap_or("(from the AWS SDK chain)")
        )?;
        if self.rules.is_empty() {
            return writeln!(
                f,
                "rules: (none: every request but the internal routes gets 404)"
            );
        }
        writeln!(f, "rules (in the order a request tries them):")?;
        for rule in self.rules_in_match_order() {
            let timeout = humantime::format_duration(rule.timeout);
            let event = EventDisplay(&rule.event);
            match &rule.target {
                TargetConfig::Rie(rie) => writeln!(
                    f,
                    "  {} -> local {} (event {event}, concurrency {}, max_queue {}, timeout {timeout})",
                    RuleDisplay(rule),
                    rie.invoke_uri,
                    rie.concurrency,
                    rie.max_queue
                )?,
                TargetConfig::Command(command) => writeln!(
                    f,
                    "  {} -> command {:?} in {} (function {}, event {event}, concurrency {}, max_queue {}, timeout {timeout})",
                    RuleDisplay(rule),
                    command.command,
                    command.working_dir.display(),
                    command.function_name,
                    command.concurrency,
                    command.max_queue
                )?,
                TargetConfig::Aws(aws) => writeln!(
                    f,
                    "  {} -> aws {}{}{}{} (event {event}, timeout {timeout})",
                    RuleDisplay(rule),
                    if aws.response_stream {
                        "(streaming) "
                    } else {
                        ""
                    },
                    aws.function_name,
                    aws.qualifier
                        .as_deref()
                        .map(|q| format!(" qualifier {q}"))
                        .unwrap_or_default(),
                    aws.region
                        .as_deref()
                        .map(|r| format!(" in {r}"))
                        .unwrap_or_default(),
                )?,
            }
        }
        Ok(())
    }
}

impl Config {
    /// The rules as the router tries them: exact hosts, then wildcards from the most specific,
    /// then rules for any host; within each, the longest path prefix first.
    fn rules_in_match_order(&self) -> Vec<&Rule> {
        let mut rules: Vec<&Rule> = self.rules.iter().collect();
        rules.sort_by_key(|rule| {
            let host = match &rule.route.host {
                Some(HostPattern::Exact(name)) => (0, 0, name.clone()),
                Some(HostPattern::Wildcard(suffix)) => {
                    (1, usize::MAX - suffix.len(), suffix.clone())
                }
                None => (2, 0, String::new()),
            };
            let prefix = rule.route.path_prefix.as_deref().map_or(0, str::len);
            (host, usize::MAX - prefix)
        });
        rules
    }
}

/// A rule's route as `lrp check` prints it: `api.example.com /orders [GET POST] (prefix
/// stripped)`.
struct RuleDisplay<'a>(&'a Rule);

impl fmt::Display for RuleDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.route)?;
        if self.0.strip_path_prefix {
            f.write_str(" (prefix stripped)")?;
        }
        if let Some(overflow) = &self.0.overflow {
            write!(f, " (overflow to aws {})", overflow.function.function_name)?;
        }
        Ok(())
    }
}

/// A rule's event format as `lrp check` prints it: `rest (stage Prod)`.
struct EventDisplay<'a>(&'a Format);

impl fmt::Display for EventDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())?;
        match self.0 {
            Format::Rest(rest) => {
                write!(f, " (stage {}", rest.stage)?;
                if !rest.binary_media_types.is_empty() {
                    write!(f, ", binary {}", rest.binary_media_types.join(" "))?;
                }
                f.write_str(")")
            }
            Format::Alb {
                multi_value_headers: true,
            } => f.write_str(" (multi-value headers)"),
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// File format

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default, deserialize_with = "non_empty_opt")]
    region: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<Port>,
    #[serde(default)]
    lambda_api_port: Option<Port>,
    #[serde(default)]
    internal_route_prefix: Option<String>,
    #[serde(default)]
    timeout: Option<FunctionTimeout>,
    #[serde(default)]
    shutdown_delay: Option<Delay>,
    #[serde(default)]
    max_connections: Option<Bounded<1, MAX_CONNECTIONS>>,
    #[serde(default)]
    connection_idle_timeout: Option<Timeout<MAX_CONNECTION_IDLE_SECS>>,
    #[serde(default)]
    event: Option<EventSetting>,
    #[serde(default)]
    local: Vec<LocalRule>,
    #[serde(default)]
    aws: Vec<AwsRule>,
}

/// A `local:` rule as written. The checks that involve several keys happen in `TryFrom`, so
/// serde_yaml still reports where the rule is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocalRule {
    #[serde(default)]
    hostname: Option<Hostname>,
    #[serde(default)]
    path_prefix: Option<PathPrefix>,
    #[serde(default)]
    methods: Option<Methods>,
    #[serde(default)]
    strip_path_prefix: Option<bool>,
    #[serde(default)]
    endpoint: Option<Endpoint>,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    function_name: Option<FunctionPathName>,
    #[serde(default)]
    concurrency: Option<Bounded<1, MAX_CONCURRENCY>>,
    #[serde(default)]
    max_queue: Option<Bounded<1, MAX_QUEUE>>,
    #[serde(default)]
    timeout: Option<FunctionTimeout>,
    #[serde(default)]
    working_dir: Option<PathBuf>,
    #[serde(default)]
    env: Option<indexmap::IndexMap<String, EnvValue>>,
    #[serde(default)]
    handler: Option<String>,
    #[serde(default)]
    idle_timeout: Option<Timeout<MAX_IDLE_TIMEOUT_SECS>>,
    #[serde(default)]
    memory_size: Option<Bounded<{ MEMORY_SIZES.0 }, { MEMORY_SIZES.1 }>>,
    #[serde(default)]
    event: Option<EventSetting>,
    #[serde(default)]
    overflow: Option<RawOverflow>,
}

/// `overflow:` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverflow {
    #[serde(deserialize_with = "non_empty")]
    function_name: String,
    #[serde(default, deserialize_with = "non_empty_opt")]
    qualifier: Option<String>,
    #[serde(default, deserialize_with = "non_empty_opt")]
    region: Option<String>,
    #[serde(default)]
    timeout: Option<FunctionTimeout>,
}

impl From<RawOverflow> for Overflow {
    fn from(raw: RawOverflow) -> Self {
        Overflow {
            function: AwsConfig {
                function_name: raw.function_name,
                qualifier: raw.qualifier,
                region: raw.region,
                response_stream: false,
            },
            timeout: raw.timeout.map(|t| t.0),
        }
    }
}

#[derive(Deserialize)]
#[serde(try_from = "RawLocalRule")]
struct LocalRule {
    route: RouteKey,
    strip_path_prefix: bool,
    kind: LocalKind,
    function_name: Option<String>,
    concurrency: usize,
    max_queue: usize,
    timeout: Option<FunctionTimeout>,
    event: Option<EventSetting>,
    overflow: Option<Overflow>,
}

enum LocalKind {
    /// The endpoint's invoke URL.
    Endpoint(Uri),
    Command {
        command: Vec<String>,
        working_dir: Option<PathBuf>,
        env: Vec<(String, String)>,
        handler: Option<String>,
        idle_timeout: Option<Duration>,
        memory_size: u32,
    },
}

impl TryFrom<RawLocalRule> for LocalRule {
    type Error = String;

    fn try_from(raw: RawLocalRule) -> Result<Self, String> {
        // serde_yaml places errors of later list items at the list, so say which item it is.
        let index = ParseScope::with(ParseScope::next_local_rule).unwrap_or(0);
        let rule = format!("local[{index}]");
        let host = raw.hostname.as_ref().map(|h| h.0.clone());
        let route = route_key(host, raw.path_prefix.clone(), raw.methods.clone())
            .map_err(|why| format!("{rule}: {why}"))?;
        ParseScope::claim_route(&rule, &route)?;
        Self::check(raw, index, route.clone())
            .map_err(|why| format!("the rule for {route} ({rule}): {why}"))
    }
}

impl LocalRule {
    fn check(raw: RawLocalRule, index: usize, route: RouteKey) -> Result<Self, String> {
        let kind = match (raw.endpoint, raw.command) {
            (Some(_), Some(_)) => {
                return Err("give either endpoint or command, not both".to_owned());
            }
            (None, None) => {
                return Err(
                    "give an endpoint (an RIE-compatible URL) or a command to run".to_owned(),
                );
            }
            (Some(endpoint), None) => {
                let command_only = [
                    ("working_dir", raw.working_dir.is_some()),
                    ("env", raw.env.is_some()),
                    ("handler", raw.handler.is_some()),
                    ("idle_timeout", raw.idle_timeout.is_some()),
                    ("memory_size", raw.memory_size.is_some()),
                ];
                if let Some((key, _)) = command_only.iter().find(|(_, given)| *given) {
                    return Err(format!(
                        "{key} applies to command rules only; this rule has an endpoint"
                    ));
                }
                LocalKind::Endpoint(endpoint.0)
            }
            (None, Some(command)) => {
                if command
                    .first()
                    .is_none_or(|program| program.trim().is_empty())
                {
                    return Err("command must name a program, as in [\"python3\", \"-m\", \"awslambdaric\", \"app.handler\"]".to_owned());
                }
                LocalKind::Command {
                    command,
                    working_dir: raw.working_dir,
                    env: raw
                        .env
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect(),
                    handler: raw.handler,
                    idle_timeout: raw.idle_timeout.map(|t| t.0),
                    memory_size: raw.memory_size.map_or(DEFAULT_MEMORY_SIZE, |m| m.0 as u32),
                }
            }
        };
        let function_name = raw.function_name.map(|n| n.0);
        let concurrency = raw.concurrency.map_or(1, |c| c.0 as usize);
        let max_queue = raw.max_queue.map_or(DEFAULT_MAX_QUEUE, |q| q.0 as usize);
        let kind = match kind {
            LocalKind::Endpoint(endpoint) => {
                let name = function_name
                    .as_deref()
                    .unwrap_or(DEFAULT_RIE_FUNCTION_NAME);
                let invoke_uri = invoke_uri(&endpoint, name)?;
                ParseScope::claim_endpoint(index, &invoke_uri, (concurrency, max_queue))?;
                LocalKind::Endpoint(invoke_uri)
            }
            command => command,
        };
        Ok(LocalRule {
            strip_path_prefix: strip_path_prefix(raw.strip_path_prefix, &route)?,
            route,
            kind,
            function_name,
            concurrency,
            max_queue,
            timeout: raw.timeout,
            event: raw.event,
            overflow: raw.overflow.map(Overflow::from),
        })
    }
}

/// An `env` value: YAML scalars of any kind become their text (`PORT: 8080` is fine).
struct EnvValue(String);

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_yaml::Value::deserialize(deserializer)? {
            serde_yaml::Value::String(s) => Ok(EnvValue(s)),
            serde_yaml::Value::Number(n) => Ok(EnvValue(n.to_string())),
            serde_yaml::Value::Bool(b) => Ok(EnvValue(b.to_string())),
            serde_yaml::Value::Null => Ok(EnvValue(String::new())),
            _ => Err(de::Error::custom(
                "env values must be strings, numbers or booleans",
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAwsRule {
    #[serde(default)]
    hostname: Option<Hostname>,
    #[serde(default)]
    path_prefix: Option<PathPrefix>,
    #[serde(default)]
    methods: Option<Methods>,
    #[serde(default)]
    strip_path_prefix: Option<bool>,
    #[serde(deserialize_with = "non_empty")]
    function_name: String,
    #[serde(default, deserialize_with = "non_empty_opt")]
    qualifier: Option<String>,
    #[serde(default, deserialize_with = "non_empty_opt")]
    region: Option<String>,
    #[serde(default)]
    timeout: Option<FunctionTimeout>,
    #[serde(default)]
    event: Option<EventSetting>,
    #[serde(default)]
    invoke_mode: InvokeMode,
}

#[derive(Deserialize)]
#[serde(try_from = "RawAwsRule")]
struct AwsRule {
    route: RouteKey,
    strip_path_prefix: bool,
    raw: RawAwsRule,
}

impl TryFrom<RawAwsRule> for AwsRule {
    type Error = String;

    fn try_from(mut raw: RawAwsRule) -> Result<Self, String> {
        let index = ParseScope::with(ParseScope::next_aws_rule).unwrap_or(0);
        let rule = format!("aws[{index}]");
        let host = raw.hostname.as_ref().map(|h| h.0.clone());
        let route = route_key(host, raw.path_prefix.take(), raw.methods.take())
            .map_err(|why| format!("{rule}: {why}"))?;
        ParseScope::claim_route(&rule, &route)?;
        Ok(AwsRule {
            strip_path_prefix: strip_path_prefix(raw.strip_path_prefix, &route)
                .map_err(|why| format!("{rule}: {why}"))?,
            route,
            raw,
        })
    }
}

/// A rule's route: a hostname, a path prefix, or both, and optionally methods.
fn route_key(
    host: Option<HostPattern>,
    prefix: Option<PathPrefix>,
    methods: Option<Methods>,
) -> Result<RouteKey, String> {
    if host.is_none() && prefix.is_none() {
        return Err("give a hostname, a path_prefix, or both".to_owned());
    }
    Ok(RouteKey {
        host,
        path_prefix: prefix.map(|p| p.0),
        methods: methods.map(|m| m.0),
    })
}

fn strip_path_prefix(strip: Option<bool>, route: &RouteKey) -> Result<bool, String> {
    match strip {
        Some(true) if route.path_prefix.is_none() => {
            Err("strip_path_prefix needs a path_prefix to strip".to_owned())
        }
        strip => Ok(strip.unwrap_or(false)),
    }
}

/// The function name a command rule gets when it names none: the hostname's first label
/// (`hello.localhost` → `hello`), else the path prefix's last segment (`/api/orders` →
/// `orders`).
fn default_function_name(route: &RouteKey) -> String {
    let name = match (&route.host, route.path_prefix.as_deref()) {
        (Some(host), _) => host.function_name(),
        (None, Some(prefix)) => prefix.rsplit('/').next().unwrap_or("").to_owned(),
        (None, None) => String::new(),
    };
    if name.is_empty() {
        DEFAULT_RIE_FUNCTION_NAME.to_owned()
    } else {
        name
    }
}

/// How an `aws:` rule calls Lambda, named as Lambda names a function URL's invoke mode.
#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "snake_case")]
enum InvokeMode {
    #[default]
    Buffered,
    ResponseStream,
}

impl FileConfig {
    /// Checks that need the whole file; returns the rule at fault and why.
    fn validate(self, base_dir: &Path) -> Result<Config, (String, String)> {
        let default_timeout = self.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0);
        let default_event = self.event.map(|e| e.0).unwrap_or_default();
        let event =
            |setting: Option<EventSetting>| setting.map_or_else(|| default_event.clone(), |e| e.0);
        let mut rules = Vec::with_capacity(self.local.len() + self.aws.len());
        for (index, local) in self.local.into_iter().enumerate() {
            let rule = format!("local[{index}]");
            let target = match local.kind {
                LocalKind::Endpoint(invoke_uri) => TargetConfig::Rie(RieConfig {
                    invoke_uri,
                    concurrency: local.concurrency,
                    max_queue: local.max_queue,
                }),
                LocalKind::Command {
                    command,
                    working_dir,
                    env,
                    handler,
                    idle_timeout,
                    memory_size,
                } => {
                    let working_dir = resolve_dir(base_dir, working_dir.as_deref())
                        .map_err(|e| (format!("{rule}.working_dir"), e))?;
                    TargetConfig::Command(CommandConfig {
                        function_name: local
                            .function_name
                            .unwrap_or_else(|| default_function_name(&local.route)),
                        command,
                        working_dir,
                        env,
                        handler,
                        concurrency: local.concurrency,
                        max_queue: local.max_queue,
                        idle_timeout,
                        memory_size,
                    })
                }
            };
            rules.push(Rule {
                route: local.route,
                strip_path_prefix: local.strip_path_prefix,
                target,
                timeout: local.timeout.map_or(default_timeout, |t| t.0),
                event: event(local.event),
                overflow: local.overflow,
            });
        }
        for AwsRule {
            route,
            strip_path_prefix,
            raw: aws,
        } in self.aws
        {
            rules.push(Rule {
                route,
                strip_path_prefix,
                target: TargetConfig::Aws(AwsConfig {
                    function_name: aws.function_name,
                    qualifier: aws.qualifier,
                    region: aws.region,
                    response_stream: aws.invoke_mode == InvokeMode::ResponseStream,
                }),
                timeout: aws.timeout.map_or(default_timeout, |t| t.0),
                event: event(aws.event),
                overflow: None,
            });
        }
        let port = self.port.map_or(DEFAULT_PORT, |p| p.0);
        Ok(Config {
            lambda_api_port: self.lambda_api_port.map(|p| p.0),
            region: self.region,
            host: self
                .host
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| DEFAULT_HOST.to_owned()),
            port,
            internal_route_prefix: normalize_prefix(self.internal_route_prefix.as_deref()),
            shutdown_delay: self.shutdown_delay.map_or(Duration::ZERO, |d| d.0),
            max_connections: self
                .max_connections
                .map_or(DEFAULT_MAX_CONNECTIONS, |m| m.0 as usize),
            connection_idle_timeout: self
                .connection_idle_timeout
                .map_or(DEFAULT_CONNECTION_IDLE_TIMEOUT, |t| t.0),
            rules,
        })
    }
}

/// `working_dir` made absolute against the configuration file's directory (the default).
fn resolve_dir(base_dir: &Path, working_dir: Option<&Path>) -> Result<PathBuf, String> {
    let dir = match working_dir {
        Some(dir) => base_dir.join(dir),
        None => base_dir.to_path_buf(),
    };
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let dir = std::path::absolute(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    Ok(dir)
}

fn invoke_uri(endpoint: &Uri, function_name: &str) -> Result<Uri, String> {
    let authority = endpoint.authority().map_or("", |a| a.as_str());
    format!("http://{authority}/2015-03-31/functions/{function_name}/invocations")
        .parse()
        .map_err(|e| format!("cannot build the invoke URL from {endpoint}: {e}"))
}

/// `__x__`, `/__x__` and `/__x__/` all mean the prefix `/__x__`.
fn normalize_prefix(prefix: Option<&str>) -> String {
    let trimmed = prefix.unwrap_or("").trim().trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

// ---------------------------------------------------------------------------------------------
// Values validated while deserializing, so errors carry the YAML position.

thread_local! {
    /// What the file being parsed has claimed so far, to reject a second claim at its position.
    static PARSE_SCOPE: RefCell<Option<ParseScope>> = const { RefCell::new(None) };
}

/// Routes and endpoints seen so far in one `from_yaml` call.
#[derive(Default)]
struct ParseScope {
    /// Each rule's route, named as in errors (`local[0]`).
    routes: Vec<(String, RouteKey)>,
    /// Invoke URL → the first `local` rule that named it and its `(concurrency, max_queue)`.
    endpoints: HashMap<String, (usize, (usize, usize))>,
    local_rules: usize,
    aws_rules: usize,
}

/// Removes the scope when `from_yaml` returns, however it returns.
struct ScopeGuard;

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        PARSE_SCOPE.with(|scope| *scope.borrow_mut() = None);
    }
}

impl ParseScope {
    fn install() -> ScopeGuard {
        PARSE_SCOPE.with(|scope| *scope.borrow_mut() = Some(ParseScope::default()));
        ScopeGuard
    }

    fn with<T>(f: impl FnOnce(&mut ParseScope) -> T) -> Option<T> {
        PARSE_SCOPE.with(|scope| scope.borrow_mut().as_mut().map(f))
    }

    fn next_local_rule(&mut self) -> usize {
        self.local_rules += 1;
        self.local_rules - 1
    }

    fn next_aws_rule(&mut self) -> usize {
        self.aws_rules += 1;
        self.aws_rules - 1
    }

    /// No two rules may take the same request: the same host and prefix, with methods in
    /// common.
    fn claim_route(rule: &str, route: &RouteKey) -> Result<(), String> {
        Self::with(|scope| {
            if let Some((other, _)) = scope.routes.iter().find(|(_, r)| r.overlaps(route)) {
                return Err(format!(
                    "{rule} takes the same requests as {other} ({route}): give each rule its own \
                     hostname, path_prefix or methods"
                ));
            }
            scope.routes.push((rule.to_owned(), route.clone()));
            Ok(())
        })
        .unwrap_or(Ok(()))
    }

    /// Rules that share an endpoint share its one limiter, so they must agree on its limits.
    fn claim_endpoint(
        index: usize,
        invoke_uri: &Uri,
        limits: (usize, usize),
    ) -> Result<(), String> {
        Self::with(|scope| {
            let key = invoke_uri.to_string();
            match scope.endpoints.get(&key) {
                Some(&(first, claimed)) if claimed != limits => Err(format!(
                    "{key} is also used by local[{first}] with concurrency {} and max_queue {}; \
                     rules that share an endpoint share one limit, so give them the same \
                     concurrency and max_queue (this one has {} and {})",
                    claimed.0, claimed.1, limits.0, limits.1
                )),
                Some(_) => Ok(()),
                None => {
                    scope.endpoints.insert(key, (index, limits));
                    Ok(())
                }
            }
        })
        .unwrap_or(Ok(()))
    }
}

struct Hostname(HostPattern);

impl<'de> Deserialize<'de> for Hostname {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        HostPattern::parse(&text)
            .map(Hostname)
            .map_err(de::Error::custom)
    }
}

/// `path_prefix`: `/orders` takes `/orders` and every path under it. A trailing slash is
/// dropped; `/` alone takes every path.
#[derive(Clone)]
struct PathPrefix(String);

impl<'de> Deserialize<'de> for PathPrefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let valid = text.starts_with('/')
            && text
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#'));
        if !valid {
            return Err(de::Error::custom(format!(
                "path_prefix {text:?} must be a path such as /orders (no query, no spaces)"
            )));
        }
        Ok(PathPrefix(text.trim_end_matches('/').to_owned()))
    }
}

/// `methods`: HTTP methods, such as `[GET, POST]`.
#[derive(Clone)]
struct Methods(Vec<http::Method>);

impl<'de> Deserialize<'de> for Methods {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        if names.is_empty() {
            return Err(de::Error::custom("methods must name at least one method"));
        }
        names
            .iter()
            .map(|name| {
                http::Method::from_bytes(name.trim().to_ascii_uppercase().as_bytes())
                    .map_err(|_| de::Error::custom(format!("{name:?} is not an HTTP method")))
            })
            .collect::<Result<_, _>>()
            .map(Methods)
    }
}

struct Endpoint(Uri);

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_endpoint(&text)
            .map(Endpoint)
            .map_err(de::Error::custom)
    }
}

fn parse_endpoint(text: &str) -> Result<Uri, String> {
    let expected = || format!("endpoint must look like http://host:port, got {text:?}");
    let uri: Uri = text.trim().parse().map_err(|_| expected())?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "{}: only plain http is supported for local endpoints",
            expected()
        ));
    }
    let authority = uri.authority().ok_or_else(expected)?;
    if authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(expected());
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "{}: lrp adds the invoke path itself, so give the endpoint without a path",
            expected()
        ));
    }
    Ok(uri)
}

/// The function name in the RIE invoke path: one URL path segment.
struct FunctionPathName(String);

impl<'de> Deserialize<'de> for FunctionPathName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:$".contains(&b));
        if !valid {
            return Err(de::Error::custom(format!(
                "function_name {name:?} must be a non-empty name of letters, digits and -_.:$"
            )));
        }
        Ok(FunctionPathName(name))
    }
}

/// A whole number from `MIN` to `MAX`, checked inside the deserializer so that the error
/// points at the value.
struct Bounded<const MIN: u64, const MAX: u64>(u64);

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BoundedVisitor<const MIN: u64, const MAX: u64>;
        impl<const MIN: u64, const MAX: u64> de::Visitor<'_> for BoundedVisitor<MIN, MAX> {
            type Value = Bounded<MIN, MAX>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a whole number from {MIN} to {MAX}")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                if (MIN..=MAX).contains(&n) {
                    Ok(Bounded(n))
                } else {
                    Err(E::custom(format!(
                        "{n} is out of range: give a whole number from {MIN} to {MAX}"
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "{n} is out of range: give a whole number from {MIN} to {MAX}"
                    ))),
                }
            }
        }
        deserializer.deserialize_u64(BoundedVisitor::<MIN, MAX>)
    }
}

/// `event`: a format's name (`rest`), or a mapping with its `type` and options:
/// `{type: rest, stage: prod, stage_variables: {…}, binary_media_types: […]}` or
/// `{type: alb, multi_value_headers: true}`.
struct EventSetting(Format);

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum EventKind {
    HttpApi,
    HttpApiV1,
    Rest,
    Alb,
    FunctionUrl,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetailedEvent {
    #[serde(rename = "type")]
    kind: EventKind,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    stage_variables: Option<indexmap::IndexMap<String, EnvValue>>,
    #[serde(default)]
    binary_media_types: Option<Vec<String>>,
    #[serde(default)]
    multi_value_headers: Option<bool>,
}

impl DetailedEvent {
    fn into_format(self) -> Result<Format, String> {
        let rest_only = [
            ("stage", self.stage.is_some()),
            ("stage_variables", self.stage_variables.is_some()),
            ("binary_media_types", self.binary_media_types.is_some()),
        ];
        let alb_only = [("multi_value_headers", self.multi_value_headers.is_some())];
        let misplaced = match self.kind {
            EventKind::Rest => alb_only.iter().find(|(_, given)| *given),
            EventKind::Alb => rest_only.iter().find(|(_, given)| *given),
            _ => rest_only.iter().chain(&alb_only).find(|(_, given)| *given),
        };
        if let Some((key, _)) = misplaced {
            return Err(format!(
                "{key} does not apply to this event type (stage, stage_variables and \
                 binary_media_types are rest's, multi_value_headers is alb's)"
            ));
        }
        Ok(match self.kind {
            EventKind::HttpApi => Format::HttpApi,
            EventKind::HttpApiV1 => Format::HttpApiV1,
            EventKind::FunctionUrl => Format::FunctionUrl,
            EventKind::Alb => Format::Alb {
                multi_value_headers: self.multi_value_headers.unwrap_or(false),
            },
            EventKind::Rest => {
                let stage = self.stage.unwrap_or_else(|| DEFAULT_REST_STAGE.to_owned());
                let valid = !stage.is_empty()
                    && stage.len() <= 128
                    && stage
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !valid {
                    return Err(format!(
                        "stage {stage:?} must be 1 to 128 letters, digits, '-' or '_', as REST \
                         stage names are"
                    ));
                }
                Format::Rest(RestOptions {
                    stage,
                    stage_variables: self
                        .stage_variables
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect(),
                    binary_media_types: self.binary_media_types.unwrap_or_default(),
                })
            }
        })
    }
}

impl<'de> Deserialize<'de> for EventSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EventVisitor;
        impl<'de> de::Visitor<'de> for EventVisitor {
            type Value = EventSetting;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "http-api, http-api-v1, rest, alb or function-url, or a mapping with type",
                )
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<EventSetting, E> {
                let kind = EventKind::deserialize(de::value::StrDeserializer::<E>::new(name))
                    .map_err(|_| {
                        E::custom(format!(
                            "unknown event {name:?}: give http-api, http-api-v1, rest, alb or \
                             function-url"
                        ))
                    })?;
                self.into_setting(DetailedEvent {
                    kind,
                    stage: None,
                    stage_variables: None,
                    binary_media_types: None,
                    multi_value_headers: None,
                })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<EventSetting, A::Error> {
                let detailed =
                    DetailedEvent::deserialize(de::value::MapAccessDeserializer::new(map))?;
                self.into_setting(detailed)
            }
        }
        impl EventVisitor {
            fn into_setting<E: de::Error>(
                self,
                detailed: DetailedEvent,
            ) -> Result<EventSetting, E> {
                detailed.into_format().map(EventSetting).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(EventVisitor)
    }
}

/// A port written as a number or a string, as the Go tool accepted both.
struct Port(u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl de::Visitor<'_> for PortVisitor {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number from 0 to 65535")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                u16::try_from(v)
                    .map(Port)
                    .map_err(|_| E::custom(format!("port {v} is out of range 0-65535")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("port {v} is out of range 0-65535")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                v.trim()
                    .parse::<u16>()
                    .map(Port)
                    .map_err(|_| E::custom(format!("port {v:?} is not a number from 0 to 65535")))
            }
        }
        deserializer.deserialize_any(PortVisitor)
    }
}

/// A function's timeout: at most Lambda's 15 minutes.
type FunctionTimeout = Timeout<MAX_TIMEOUT_SECS>;

/// A duration written `30s`, `500ms`, `2m`, or a plain number of seconds, greater than zero and
/// at most `MAX_SECS` seconds.
struct Timeout<const MAX_SECS: u64>(Duration);

impl<'de, const MAX_SECS: u64> Deserialize<'de> for Timeout<MAX_SECS> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let max = Duration::from_secs(MAX_SECS);
        deserializer
            .deserialize_any(DurationVisitor {
                max,
                allow_zero: false,
            })
            .map(Timeout)
    }
}

/// A positive duration up to `max`, written as [`Timeout`] describes.
struct DurationVisitor {
    max: Duration,
    allow_zero: bool,
}

impl DurationVisitor {
    fn check<E: de::Error>(&self, duration: Duration) -> Result<Duration, E> {
        if duration.is_zero() && !self.allow_zero {
            Err(E::custom("a timeout must be greater than zero"))
        } else if duration > self.max {
            Err(E::custom(format!(
                "{} is too long: the limit is {}",
                humantime::format_duration(duration),
                humantime::format_duration(self.max)
            )))
        } else {
            Ok(duration)
        }
    }
}

impl de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration such as 30s, 500ms, 2m, or a number of seconds")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        self.check(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map_err(|_| E::custom("a timeout must be positive"))
            .and_then(|v| self.visit_u64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Duration::try_from_secs_f64(v)
            .map_err(|_| E::custom(format!("timeout {v} is not a valid duration")))
            .and_then(|d| self.check(d))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        let v = v.trim();
        if let Ok(seconds) = v.parse::<f64>() {
            return self.visit_f64(seconds);
        }
        humantime::parse_duration(v)
            .map_err(|_| {
                E::custom(format!(
                    "timeout {v:?} is not a duration such as 30s, 500ms, 2m or 5"
                ))
            })
            .and_then(|d| self.check(d))
    }
}

/// A duration that may be zero, written like a [`Timeout`], at most 15 minutes.
struct Delay(Duration);

impl<'de> Deserialize<'de> for Delay {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(DurationVisitor {
                max: Duration::from_secs(MAX_TIMEOUT_SECS),
                allow_zero: true,
            })
            .map(Delay)
    }
}

fn non_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.trim().is_empty() {
        return Err(de::Error::custom("must not be empty"));
    }
    Ok(text.trim().to_owned())
}

fn non_empty_opt<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    Ok(text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::from_yaml(text, "lrp.yaml").map_err(|e| e.to_string())
    }

    fn only_rie(config: &Config) -> (&Rule, &RieConfig) {
        match &config.rules[..] {
            [
                rule @ Rule {
                    target: TargetConfig::Rie(rie),
                    ..
                },
            ] => (rule, rie),
            other => panic!("expected one local rule, got {other:?}"),
        }
    }

    #[test]
    fn the_go_tools_own_file_starts_unchanged() {
        let config = parse(
            "local:\n  - hostname: foo.domain.lb\n    endpoint: http://lambda-1:8080\n  \
             - hostname: bar.domain.lb\n    endpoint: http://lambda-2:8080\n",
        )
        .unwrap();
        assert_eq!(config.host, "0.0.0.0");
        assert_eq!(config.port, 8080);
        assert_eq!(config.region, None);
        assert_eq!(config.internal_route_prefix, "");
        assert_eq!(config.rules.len(), 2);
        let TargetConfig::Rie(rie) = &config.rules[1].target else {
            panic!("expected a local rule")
        };
        assert_eq!(
            rie.invoke_uri,
            "http://lambda-2:8080/2015-03-31/functions/function/invocations"
        );
        assert_eq!(rie.concurrency, 1);
        assert_eq!(config.rules[1].timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn every_go_key_is_accepted_with_string_or_number_port() {
        let text = "region: us-east-1\nhost: 127.0.0.1\nport: \"9000\"\n\
                    internal_route_prefix: __lrp__\n\
                    local:\n  - hostname: a\n    endpoint: http://a:8080\n\
                    aws:\n  - hostname: b\n    function_name: my-function\n";
        let config = parse(text).unwrap();
        assert_eq!(config.region.as_deref(), Some("us-east-1"));
        assert_eq!(config.host, "127.0.0.1");
        assert_eq!(config.port, 9000);
        assert_eq!(config.internal_route_prefix, "/__lrp__");
        assert!(matches!(&config.rules[1].target,
            TargetConfig::Aws(aws) if aws.function_name == "my-function"));
        assert_eq!(parse("port: 9001").unwrap().port, 9001);
    }

    #[test]
    fn an_empty_file_is_a_proxy_without_rules() {
        assert_eq!(parse("").unwrap(), Config::empty());
        assert_eq!(parse("# nothing yet\n\n").unwrap(), Config::empty());
    }

    #[test]
    fn durations_take_units_or_plain_seconds() {
        let config = parse(
            "timeout: 2m\nlocal:\n  - {hostname: a, endpoint: 'http://a:1'}\n  \
             - {hostname: b, endpoint: 'http://b:1', timeout: 500ms}\n  \
             - {hostname: c, endpoint: 'http://c:1', timeout: 5}\n  \
             - {hostname: d, endpoint: 'http://d:1', timeout: 1.5}\n",
        )
        .unwrap();
        let timeouts: Vec<_> = config.rules.iter().map(|r| r.timeout).collect();
        assert_eq!(
            timeouts,
            [
                Duration::from_secs(120),
                Duration::from_millis(500),
                Duration::from_secs(5),
                Duration::from_millis(1500)
            ]
        );
    }

    #[test]
    fn local_rule_additions_have_defaults_and_overrides() {
        let config = parse(
            "local:\n  - hostname: Svc.Example.COM.\n    endpoint: http://rie:9000/\n    \
             function_name: echo\n    concurrency: 4\n",
        )
        .unwrap();
        let (rule, rie) = only_rie(&config);
        assert_eq!(rule.route.to_string(), "svc.example.com");
        assert_eq!(rie.concurrency, 4);
        assert_eq!(
            rie.invoke_uri,
            "http://rie:9000/2015-03-31/functions/echo/invocations"
        );
    }

    #[test]
    fn command_rules_resolve_their_directory_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("fn")).unwrap();
        let origin = dir.path().join("lrp.yaml");
        let config = Config::from_yaml(
            "local:\n  - hostname: hello.localhost\n    command: [python3, app.py]\n    \
             working_dir: fn\n    env: {PORT: 8080, DEBUG: true, NAME: x}\n    \
             idle_timeout: 1m\n  - hostname: '*.other.test'\n    command: [./bootstrap]\n",
            &origin.display().to_string(),
        )
        .unwrap();
        let [first, second] = &config.rules[..] else {
            panic!("two rules")
        };
        let TargetConfig::Command(hello) = &first.target else {
            panic!("a command rule")
        };
        assert_eq!(hello.function_name, "hello");
        assert_eq!(hello.command, ["python3", "app.py"]);
        assert_eq!(hello.working_dir, dir.path().join("fn"));
        let env: Vec<_> = hello.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(env, ["PORT=8080", "DEBUG=true", "NAME=x"]);
        assert_eq!(hello.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(
            (hello.concurrency, hello.max_queue, hello.memory_size),
            (1, 100, 128)
        );
        let TargetConfig::Command(other) = &second.target else {
            panic!("a command rule")
        };
        assert_eq!(other.function_name, "other");
        assert_eq!(
            other.working_dir,
            dir.path(),
            "the file's directory by default"
        );
    }

    #[test]
    fn prefix_with_or_without_slashes_means_the_same() {
        for written in ["__x__", "/__x__", "/__x__/"] {
            let config = parse(&format!("internal_route_prefix: {written}")).unwrap();
            assert_eq!(config.internal_route_prefix, "/__x__");
        }
        assert_eq!(
            parse("internal_route_prefix: ''")
                .unwrap()
                .internal_route_prefix,
            ""
        );
    }

    #[test]
    fn mistakes_name_the_file_line_column_and_rule() {
        let cases = [
            (
                "local:\n  - hostname: a\n    endpoint: http://a:1\n    endpiont: x\n",
                "lrp.yaml:4:5: local[0]: unknown field `endpiont`",
            ),
            (
                "local:\n  - hostname: a\n    endpoint: [1]\n",
                "lrp.yaml:3:15: local[0].endpoint: invalid type: sequence, expected a string",
            ),
            (
                "local:\n  - hostname: a\n    endpoint: http://a:1\n  - hostname: A.\n    endpoint: http://b:1\n",
                "lrp.yaml:2:3: local: local[1] takes the same requests as local[0] (a)",
            ),
            (
                "local:\n  - hostname: a\n    endpoint: ftp://a:1\n",
                "lrp.yaml:2:5: local[0]: endpoint must look like http://host:port",
            ),
            (
                "local:\n  - hostname: a\n    endpoint: http://a:1/path\n",
                "give the endpoint without a path",
            ),
            (
                "local:\n  - hostname: a\n    endpoint: http://a:1\n    concurrency: 0\n",
                "lrp.yaml:4:18: local[0].concurrency: 0 is out of range: give a whole number from 1 to 1000",
            ),
            // Every number is bounded, so none can overflow a deadline or a counter.
            (
                "local:\n  - hostname: a\n    endpoint: http://a:1\n    timeout: 18446744073709551615\n",
                "lrp.yaml:4:14: local[0].timeout: 584542046090years 7months 15days 17h 5m 3s is too long: the limit is 15m",
            ),
            (
                "timeout: 901s\n",
                "lrp.yaml:1:10: timeout: 15m 1s is too long: the limit is 15m",
            ),
            (
                "aws:\n  - {hostname: a, function_name: f, timeout: 1e30}\n",
                "aws[0].timeout: timeout 1000000000000000000000000000000 is not a valid duration",
            ),
            (
                "local:\n  - {hostname: a, endpoint: 'http://a:1', max_queue: 0}\n",
                "local[0].max_queue: 0 is out of range: give a whole number from 1 to 10000",
            ),
            (
                "local:\n  - {hostname: a, command: [x], memory_size: 64}\n",
                "local[0].memory_size: 64 is out of range: give a whole number from 128 to 10240",
            ),
            (
                "local:\n  - {hostname: a, command: [x], idle_timeout: 2d}\n",
                "local[0].idle_timeout: 2days is too long: the limit is 1day",
            ),
            (
                "max_connections: 0\n",
                "lrp.yaml:1:18: max_connections: 0 is out of range",
            ),
            (
                "connection_idle_timeout: -1\n",
                "connection_idle_timeout: a timeout must be positive",
            ),
            ("shutdown_delay: 1h\n", "shutdown_delay: 1h is too long"),
            (
                "local:\n  - hostname: a\n    endpoint: http://a:1\n    timeout: soon\n",
                "lrp.yaml:4:14: local[0].timeout: timeout \"soon\" is not a duration",
            ),
            (
                "port: 70000\n",
                "lrp.yaml:1:7: port: port 70000 is out of range",
            ),
            ("prot: 1\n", "lrp.yaml:1:1: unknown field `prot`"),
            (
                "aws:\n  - hostname: a\n",
                "aws[0]: missing field `function_name`",
            ),
            (
                "local:\n  - hostname: 'a b'\n    endpoint: http://a:1\n",
                "local[0]: hostname \"a b\"",
            ),
            (
                "local:\n  - hostname: a\n    endpoint: http://x:1\naws:\n  - hostname: a\n    function_name: f\n",
                "lrp.yaml:5:3: aws: aws[0] takes the same requests as local[0] (a)",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err();
            assert!(
                err.contains(expected),
                "for {text:?}\n  expected to contain {expected:?}\n  got {err:?}"
            );
        }
    }

    #[test]
    fn rules_sharing_an_endpoint_must_agree_on_its_limits() {
        let err = parse(
            "local:\n  - hostname: a\n    endpoint: http://x:1\n    concurrency: 2\n  \
             - hostname: b\n    endpoint: http://x:1\n",
        )
        .unwrap_err();
        assert!(err.starts_with("lrp.yaml:2:3: local: the rule for b (local[1]): http://x:1/2015-03-31/functions/function/invocations is also used by local[0] with concurrency 2 and max_queue 100"), "{err}");
        let err = parse(
            "local:\n  - {hostname: a, endpoint: 'http://x:1', max_queue: 5}\n  \
             - {hostname: z, endpoint: 'http://y:1'}\n  \
             - {hostname: b, endpoint: 'http://x:1', max_queue: 6}\n",
        )
        .unwrap_err();
        assert!(err.contains("also used by local[0]"), "{err}");
        assert!(
            err.contains("same concurrency and max_queue (this one has 1 and 6)"),
            "{err}"
        );
        // Another function name at the same address is another function.
        parse(
            "local:\n  - {hostname: a, endpoint: 'http://x:1', max_queue: 5}\n  \
             - {hostname: b, endpoint: 'http://x:1', function_name: other}\n",
        )
        .unwrap();
        // Same endpoint, same limit: two hostnames for one function is fine.
        parse(
            "local:\n  - {hostname: a, endpoint: 'http://x:1'}\n  \
             - {hostname: b, endpoint: 'http://x:1'}\n",
        )
        .unwrap();
    }

    #[test]
    fn every_rule_has_an_event_format_named_or_detailed_with_a_file_default() {
        let config = parse(
            "event: http-api-v1\n\
             local:\n  - {hostname: a, endpoint: 'http://x:1'}\n  \
             - hostname: b\n    endpoint: http://x:2\n    event:\n      type: rest\n      \
             stage_variables: {env: test, n: 1}\n      binary_media_types: [image/png]\n  \
             - {hostname: c, endpoint: 'http://x:3', event: {type: alb, multi_value_headers: true}}\n\
             aws:\n  - {hostname: d, function_name: f, event: function-url}\n",
        )
        .unwrap();
        let events: Vec<&Format> = config.rules.iter().map(|r| &r.event).collect();
        assert_eq!(events[0], &Format::HttpApiV1, "the file's default");
        assert_eq!(
            events[1],
            &Format::Rest(RestOptions {
                stage: "Prod".into(),
                stage_variables: vec![("env".into(), "test".into()), ("n".into(), "1".into())],
                binary_media_types: vec!["image/png".into()],
            })
        );
        assert_eq!(
            events[2],
            &Format::Alb {
                multi_value_headers: true
            }
        );
        assert_eq!(events[3], &Format::FunctionUrl);
        let TargetConfig::Aws(aws) = &config.rules[3].target else {
            panic!("an aws rule");
        };
        assert!(!aws.response_stream, "buffered by default");
        let table = config.to_string();
        assert!(
            table.contains("(event rest (stage Prod, binary image/png), concurrency 1"),
            "{table}"
        );
        assert!(
            table.contains("(event alb (multi-value headers), concurrency 1"),
            "{table}"
        );
        // A Go-tool file, without the key, gets payload 2.0.
        let go = parse("local:\n  - {hostname: a, endpoint: 'http://x:1'}\n").unwrap();
        assert_eq!(go.rules[0].event, Format::HttpApi);
    }

    #[test]
    fn event_mistakes_are_reported_where_they_are() {
        for (text, expected) in [
            (
                "local:\n  - hostname: a\n    endpoint: http://x:1\n    event: soap\n",
                "lrp.yaml:4:12: local[0].event: unknown event \"soap\"",
            ),
            (
                "event: {type: alb, stage: x}\n",
                "event: stage does not apply to this event type",
            ),
            (
                "event: {type: rest, multi_value_headers: true}\n",
                "multi_value_headers does not apply to this event type",
            ),
            (
                "event: {type: rest, stage: 'a b'}\n",
                "stage \"a b\" must be 1 to 128 letters",
            ),
            ("event: {type: rest, stages: x}\n", "unknown field `stages`"),
            ("event: {stage: x}\n", "missing field `type`"),
            (
                "aws:\n  - {hostname: a, function_name: f, invoke_mode: stream}\n",
                "unknown variant `stream`, expected `buffered` or `response_stream`",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "for {text:?}: {err}");
        }
    }

    #[test]
    fn rules_route_by_host_path_prefix_and_methods_and_print_in_match_order() {
        let config = parse(
            "local:\n  - {path_prefix: /orders/, endpoint: 'http://x:1'}\n  \
             - {hostname: api.test, path_prefix: /orders, methods: [get, POST], \
             strip_path_prefix: true, endpoint: 'http://x:1'}\n  \
             - {hostname: api.test, path_prefix: /orders, methods: [DELETE], endpoint: 'http://x:1'}\n  \
             - {hostname: '*.test', endpoint: 'http://x:1'}\n  \
             - {path_prefix: /api/users, command: [x]}\n",
        )
        .unwrap();
        let route = &config.rules[1].route;
        assert_eq!(route.path_prefix.as_deref(), Some("/orders"));
        assert_eq!(
            route.methods,
            Some(vec![http::Method::GET, http::Method::POST])
        );
        assert!(config.rules[1].strip_path_prefix);
        assert_eq!(
            config.rules[0].route.path_prefix.as_deref(),
            Some("/orders"),
            "no trailing slash"
        );
        let TargetConfig::Command(users) = &config.rules[4].target else {
            panic!("a command rule");
        };
        assert_eq!(
            users.function_name, "users",
            "named after the prefix's last segment"
        );
        let table = config.to_string();
        let order: Vec<&str> = table
            .lines()
            .skip_while(|l| !l.starts_with("rules"))
            .skip(1)
            .map(|l| l.split(" -> ").next().unwrap().trim())
            .collect();
        assert_eq!(
            order,
            [
                "api.test /orders [GET POST] (prefix stripped)",
                "api.test /orders [DELETE]",
                "*.test",
                "(any host) /api/users",
                "(any host) /orders",
            ]
        );
    }

    #[test]
    fn a_local_rule_may_overflow_to_a_function_on_aws() {
        let config = parse(
            "local:\n  - hostname: a\n    endpoint: http://x:1\n    overflow:\n      \
             function_name: spare\n      qualifier: live\n      region: eu-west-1\n      timeout: 5s\n",
        )
        .unwrap();
        let overflow = config.rules[0].overflow.as_ref().unwrap();
        assert_eq!(overflow.function.function_name, "spare");
        assert_eq!(overflow.function.qualifier.as_deref(), Some("live"));
        assert_eq!(overflow.function.region.as_deref(), Some("eu-west-1"));
        assert_eq!(overflow.timeout, Some(Duration::from_secs(5)));
        assert!(
            config
                .to_string()
                .contains("a (overflow to aws spare) -> local")
        );
        let err =
            parse("local:\n  - {hostname: a, endpoint: 'http://x:1', overflow: {qualifier: x}}\n")
                .unwrap_err();
        assert!(err.contains("missing field `function_name`"), "{err}");
    }

    #[test]
    fn route_mistakes_are_refused() {
        for (text, expected) in [
            (
                "local:\n  - {endpoint: 'http://x:1'}\n",
                "give a hostname, a path_prefix, or both",
            ),
            (
                "local:\n  - {path_prefix: orders, endpoint: 'http://x:1'}\n",
                "path_prefix \"orders\" must be a path such as /orders",
            ),
            (
                "local:\n  - {path_prefix: '/a?b', endpoint: 'http://x:1'}\n",
                "must be a path such as /orders",
            ),
            (
                "local:\n  - {hostname: a, methods: [GE T], endpoint: 'http://x:1'}\n",
                "\"GE T\" is not an HTTP method",
            ),
            (
                "local:\n  - {hostname: a, methods: [], endpoint: 'http://x:1'}\n",
                "at least one method",
            ),
            (
                "local:\n  - {hostname: a, strip_path_prefix: true, endpoint: 'http://x:1'}\n",
                "strip_path_prefix needs a path_prefix",
            ),
            (
                "local:\n  - {path_prefix: /a, methods: [GET], endpoint: 'http://x:1'}\n  \
                 - {path_prefix: /a/, endpoint: 'http://x:2'}\n",
                "local[1] takes the same requests as local[0] ((any host) /a)",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "for {text:?}: {err}");
        }
    }

    #[test]
    fn the_resolved_table_prints_every_rule() {
        let config = parse(
            "local:\n  - {hostname: '*.svc', endpoint: 'http://x:1', concurrency: 3, timeout: 2s}\n\
             aws:\n  - {hostname: b, function_name: 'f:live', region: us-west-2}\n",
        )
        .unwrap();
        let table = config.to_string();
        assert!(
            table.contains(
                "*.svc -> local http://x:1/2015-03-31/functions/function/invocations (event http-api, concurrency 3, max_queue 100, timeout 2s)"
            ),
            "{table}"
        );
        assert!(
            table.contains("b -> aws f:live in us-west-2 (event http-api, timeout 30s)"),
            "{table}"
        );
        let streaming =
            parse("aws:\n  - {hostname: s, function_name: f, invoke_mode: response_stream}\n")
                .unwrap()
                .to_string();
        assert!(
            streaming.contains("s -> aws (streaming) f (event http-api"),
            "{streaming}"
        );
    }
}
