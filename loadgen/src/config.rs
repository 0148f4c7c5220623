//! Command line of the `loadgen` binary: one clap struct per subcommand.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::scenarios::Scenario;

/// The most connections one process may hold here: the open-file limit is 20,000 and every
/// connection is one descriptor, so half of it leaves room for everything else.
pub const MAX_CONNECTIONS: u32 = 10_000;

/// SSE load generator: opens many SSE connections, publishes events at a set rate and
/// measures what every connection receives.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one scenario against one server and write its JSON report and plots.
    Run(Box<RunConfig>),
    /// Read every run report in a folder and write a comparison table and plots.
    Report(ReportConfig),
    /// Hold many sockets that trickle a request head one byte at a time (reopening each one
    /// the server closes) while probing that new clients are answered and a stream flows.
    Slowloris(SlowlorisConfig),
    /// List the benchmark scenarios: what each loads and which servers it runs against.
    Scenarios,
    /// Print the runs of a benchmark (`bench/run.sh` follows it), one a line:
    /// `SCENARIO SERVER CONNECTIONS RATE CUSTOMERS PHASE`.
    BenchPlan(BenchPlanConfig),
}

#[derive(Debug, Args)]
pub struct BenchPlanConfig {
    /// Scenarios to run, separated by spaces, in this order (empty: every scenario).
    #[arg(long, env = "LOADGEN_BENCH_SCENARIOS", default_value = "",
          value_parser = |list: &str| crate::scenarios::parse_list(list).map(ScenarioList))]
    pub scenarios: ScenarioList,

    /// Servers to run each scenario against, separated by spaces, in this order.
    #[arg(long, env = "LOADGEN_BENCH_SERVERS",
          value_parser = |list: &str| Ok::<_, String>(Words(list.split_whitespace().map(str::to_owned).collect())))]
    pub servers: Words,

    /// Divide every scenario's connections and customers by this (a quick run).
    #[arg(long, env = "LOADGEN_BENCH_SCALE", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub scale: u32,
}

/// The most trickling sockets: one descriptor each, under the 20,000 open-file limit.
pub const MAX_SLOW_SOCKETS: u32 = 19_000;

#[derive(Debug, Args, serde::Serialize)]
pub struct SlowlorisConfig {
    /// Name of the server under test, copied into the report.
    #[arg(long, default_value = "server")]
    pub server: String,

    /// Base URL of the server (e.g. http://127.0.0.1:8080).
    #[arg(long, value_parser = parse_url)]
    #[serde(serialize_with = "serialize_display")]
    pub url: HttpUrl,

    /// Trickling sockets to hold open.
    #[arg(long, default_value_t = MAX_SLOW_SOCKETS,
          value_parser = clap::value_parser!(u32).range(1..=MAX_SLOW_SOCKETS as i64))]
    pub sockets: u32,

    /// Time between two bytes of a trickling socket.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    #[serde(with = "duration_secs")]
    pub byte_interval: Duration,

    /// Send nothing at all on the sockets (instead of trickling).
    #[arg(long)]
    pub silent: bool,

    /// How long to probe once every socket has been opened.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    #[serde(with = "duration_secs")]
    pub duration: Duration,

    /// Spread sockets over 127.0.0.1 to 127.0.0.N (reopened sockets need many ports).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub source_addrs: u8,

    /// A probe request not answered within this counts as unanswered.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "duration_secs")]
    pub probe_timeout: Duration,

    /// Server process to sample (open file descriptors from /proc/PID/fd).
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Where to write the JSON report.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// How events are created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// POST an order as JSON (`/api/order` of sse-orders); its sku carries the sequence marker.
    Order,
    /// POST a raw body carrying the sequence marker (Nchan `/pub`, the reference servers).
    Raw,
    /// Publish nothing: hold the connections for `--duration` (idle memory, connect time).
    None,
}

#[derive(Debug, Args, serde::Serialize)]
pub struct RunConfig {
    /// Name of the scenario, copied into the report (e.g. `fanout-1k-50`).
    #[arg(long, env = "LOADGEN_SCENARIO", default_value = "adhoc")]
    pub scenario: String,

    /// Name of the server under test, copied into the report (e.g. `ours`, `floor`).
    #[arg(long, env = "LOADGEN_SERVER", default_value = "server")]
    pub server: String,

    /// Subscribe URL: every connection sends `GET` for it and expects `text/event-stream`.
    #[arg(long, env = "LOADGEN_URL", value_parser = parse_url)]
    #[serde(serialize_with = "serialize_display")]
    pub url: HttpUrl,

    /// Number of SSE connections to open (at most 10,000 per process).
    #[arg(long, env = "LOADGEN_CONNECTIONS", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(0..=MAX_CONNECTIONS as i64))]
    pub connections: u32,

    /// How many connection attempts may be in flight at once (10,000 = all at once).
    #[arg(long, env = "LOADGEN_CONNECT_CONCURRENCY", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub connect_concurrency: u32,

    /// Give up on a connection that has not received its response headers after this long.
    #[arg(long, env = "LOADGEN_CONNECT_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    #[serde(with = "duration_secs")]
    pub connect_timeout: Duration,

    /// Spread connections over this many loopback source addresses, 127.0.0.1 to 127.0.0.N,
    /// so that consecutive runs do not run out of ephemeral ports.
    #[arg(long, env = "LOADGEN_SOURCE_ADDRS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=254))]
    pub source_addrs: u8,

    /// Wait this long after the last connection is established before publishing.
    #[arg(long, env = "LOADGEN_SETTLE", default_value = "500ms", value_parser = parse_duration)]
    #[serde(with = "duration_secs")]
    pub settle: Duration,

    /// How events are created: `order`, `raw` or `none`.
    #[arg(long, env = "LOADGEN_PUBLISH", value_enum, default_value = "order")]
    pub publish: PublishMode,

    /// Publish URL: `POST` target for `order` and `raw` (e.g. `http://127.0.0.1:8080/api/order`).
    #[arg(long, env = "LOADGEN_PUBLISH_URL", value_parser = parse_url)]
    #[serde(serialize_with = "serialize_opt_display")]
    pub publish_url: Option<HttpUrl>,

    /// Events per second to create (a schedule, not a best effort: late POSTs are counted).
    #[arg(long, env = "LOADGEN_RATE", default_value_t = 10.0, value_parser = parse_rate)]
    pub rate: f64,

    /// How long to publish (or, with `--publish none`, how long to hold the connections).
    #[arg(long, env = "LOADGEN_DURATION", default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "duration_secs")]
    pub duration: Duration,

    /// POSTs allowed in flight at once, each on its own keep-alive connection. 1 is a
    /// closed loop; more makes publishing open-loop at `--rate` (the overload mode), with
    /// the time each POST waited for a free slot reported as schedule lag.
    #[arg(long, env = "LOADGEN_MAX_OUTSTANDING", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_outstanding: u32,

    /// Approximate size of one event's `data:` payload in bytes (padding is added to reach it).
    #[arg(long, env = "LOADGEN_EVENT_BYTES", default_value_t = 300,
          value_parser = clap::value_parser!(u32).range(64..=65_536))]
    pub event_bytes: u32,

    /// Order items added to reach `--event-bytes` with `--publish order` (the size of the
    /// delivered JSON depends on the server's encoding; the report shows the real mean).
    #[arg(long, env = "LOADGEN_ORDER_PAD_ITEMS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(0..=50))]
    pub order_pad_items: u32,

    /// After publishing, wait at most this long for the last deliveries.
    #[arg(long, env = "LOADGEN_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "duration_secs")]
    pub drain_timeout: Duration,

    /// Spread streams and orders over this many customers: connection `i` reads only customer
    /// `c{i % N}`'s orders (by `?customerId=`, or by its token with --jwt-secret) and order
    /// `s` is for customer `c{s % N}` (a raw event is POSTed with `?customerId=c{s % N}`).
    /// 0: unfiltered streams, every order for one customer.
    #[arg(long, env = "LOADGEN_CUSTOMERS", default_value_t = 0)]
    pub customers: u32,

    /// HS256 secret of the server under test (its --jwt-secret): streams and POSTs carry
    /// tokens signed with it (a customer's token with --customers, else orders:read:all).
    #[arg(long, env = "LOADGEN_JWT_SECRET", hide_env_values = true)]
    #[serde(skip)]
    pub jwt_secret: Option<String>,

    /// Process id of the server to sample (RSS from /proc/PID/status, CPU from
    /// /proc/PID/stat); repeat for servers made of several processes.
    #[arg(long = "server-pid", env = "LOADGEN_SERVER_PIDS", value_delimiter = ',')]
    pub server_pids: Vec<u32>,

    /// The server's `/metrics` URL (sse-orders): the fan-out writer's own CPU per delivery is
    /// read from it at the start and end of the run and reported beside the process figure.
    #[arg(long, env = "LOADGEN_SERVER_METRICS", value_parser = parse_url)]
    #[serde(serialize_with = "serialize_opt_display")]
    pub server_metrics: Option<HttpUrl>,

    /// Stop publishing and draining early when the server processes' RSS passes this many
    /// MiB (protects the machine when a server queues an overload in memory).
    #[arg(long, env = "LOADGEN_MAX_SERVER_RSS_MIB", default_value_t = 8192,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_server_rss_mib: u64,

    /// Where to write the JSON report; the PNG plots are written beside it
    /// (`NAME-latency.png`, `NAME-timeline.png`).
    #[arg(long, env = "LOADGEN_OUT")]
    pub out: Option<PathBuf>,

    /// Do not draw the PNG plots.
    #[arg(long, env = "LOADGEN_NO_PLOTS")]
    pub no_plots: bool,

    /// Allow targets outside 127.0.0.0/8 (off by default: this tool floods its target).
    #[arg(long, env = "LOADGEN_ALLOW_NON_LOOPBACK")]
    pub allow_non_loopback: bool,
}

#[derive(Debug, Args)]
pub struct ReportConfig {
    /// Folder holding the run reports (`*.json` written by `loadgen run --out`).
    #[arg(long, env = "LOADGEN_RESULTS", default_value = "bench/results")]
    pub results: PathBuf,

    /// Where to write the Markdown comparison (default: RESULTS/summary.md).
    #[arg(long, env = "LOADGEN_SUMMARY")]
    pub out: Option<PathBuf>,

    /// Server name whose figures are compared against the references.
    #[arg(long, env = "LOADGEN_OURS", default_value = "ours")]
    pub ours: String,

    /// Do not draw the comparison plots.
    #[arg(long, env = "LOADGEN_NO_PLOTS")]
    pub no_plots: bool,
}

/// Scenarios named in one argument (a list in one argument mirrors run.sh's variables).
#[derive(Debug, Clone)]
pub struct ScenarioList(pub Vec<&'static Scenario>);

/// Names separated by whitespace in one argument.
#[derive(Debug, Clone)]
pub struct Words(pub Vec<String>);

impl RunConfig {
    /// Checks across flags that clap cannot express; each error names the flag to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.publish != PublishMode::None && self.publish_url.is_none() {
            return Err("--publish-url is required unless --publish none".into());
        }
        if !self.allow_non_loopback {
            let mut targets = vec![("--url", &self.url)];
            if let Some(url) = &self.publish_url {
                targets.push(("--publish-url", url));
            }
            for (flag, url) in targets {
                if !url.addr.ip().is_loopback() {
                    return Err(format!(
                        "{flag} {url} is not a loopback address; pass --allow-non-loopback to load another host"
                    ));
                }
            }
        }
        if self.source_addrs > 1 && !self.url.addr.ip().is_loopback() {
            return Err("--source-addrs above 1 only works against a loopback --url".into());
        }
        Ok(())
    }

    /// The source addresses connections are spread over.
    pub fn source_ips(&self) -> Vec<Ipv4Addr> {
        (1..=self.source_addrs).map(|n| Ipv4Addr::new(127, 0, 0, n)).collect()
    }
}

/// `http://host:port/path`: the only URL form this tool needs (plain HTTP/1.1).
#[derive(Debug, Clone)]
pub struct HttpUrl {
    pub addr: SocketAddr,
    /// The `Host` header value as written in the URL.
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

fn parse_url(text: &str) -> Result<HttpUrl, String> {
    let rest = text
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{text}` must start with http:// (TLS is not supported)"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("`{text}` has no host"));
    }
    let with_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{authority}`: {e}"))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| format!("`{authority}` has no IPv4 address"))?;
    Ok(HttpUrl {
        addr,
        authority: authority.to_owned(),
        path: path.to_owned(),
    })
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration like 500ms or 10s: {e}"))
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate <= 1_000_000.0 => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a rate in events per second between 0 (exclusive) and 1,000,000"
        )),
    }
}

fn serialize_display<S: serde::Serializer, T: std::fmt::Display>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn serialize_opt_display<S: serde::Serializer, T: std::fmt::Display>(
    value: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => s.collect_str(value),
        None => s.serialize_none(),
    }
}

mod duration_secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(value.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_port_and_path_is_split() {
        let url = parse_url("http://127.0.0.1:8080/api/order/stream?x=1").unwrap();
        assert_eq!(url.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(url.path, "/api/order/stream?x=1");
        assert_eq!(url.authority, "127.0.0.1:8080");
    }

    #[test]
    fn url_without_scheme_is_refused() {
        assert!(parse_url("127.0.0.1:80/x").unwrap_err().contains("http://"));
    }

    #[test]
    fn a_bench_plan_with_an_unknown_scenario_names_the_flag_and_the_scenario() {
        let err = Cli::try_parse_from([
            "loadgen",
            "bench-plan",
            "--servers",
            "ours",
            "--scenarios",
            "idle-10k idle-1k",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("--scenarios") && err.contains("`idle-1k`"), "{err}");
    }

    #[test]
    fn connections_above_the_limit_name_the_flag() {
        let err = Cli::try_parse_from([
            "loadgen",
            "run",
            "--url",
            "http://127.0.0.1:1/",
            "--connections",
            "10001",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("--connections"), "{err}");
    }
}
