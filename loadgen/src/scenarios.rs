//! The benchmark scenarios: the one list of what each loads and which servers it runs against.

use std::fmt::Write as _;

/// The name `bench/run.sh` gives sse-orders with `--auth none`.
pub const OURS: &str = "ours";
/// The name `bench/run.sh` gives sse-orders with `--auth jwt`.
pub const OURS_JWT: &str = "ours-jwt";
/// The name `bench/run.sh` gives another build of sse-orders (`BENCH_BEFORE_BIN`, `--auth
/// none`), run beside `ours` to show a change costs nothing.
pub const OURS_BEFORE: &str = "ours-before";
/// The server name of the POST ladder's reports: order-api alone, through Redis.
pub const OURS_REDIS: &str = "ours-redis";

/// How a scenario creates events and so how long it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Closed-loop publishing at the rate for the fan-out duration, then a drain.
    Publish,
    /// Nothing published: the connections are held, for idle memory and connect time.
    Hold,
    /// Open-loop publishing at the rate with a bounded number of POSTs in flight, for a
    /// quarter of the fan-out duration: past saturation the drain is allowed to time out.
    Overload,
    /// order-api alone through Redis at a ladder of POST rates, then `redis-benchmark` XADD.
    PostLadder,
}

impl Phase {
    /// The word `bench/run.sh` dispatches on.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Publish => "publish",
            Phase::Hold => "hold",
            Phase::Overload => "overload",
            Phase::PostLadder => "post-ladder",
        }
    }
}

/// Which servers a scenario is run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Servers {
    /// sse-orders without auth beside every reference: the comparison proper.
    Compared,
    /// sse-orders with and without auth beside every reference: what auth costs and how ours
    /// stands against the references, in one run.
    Everyone,
    /// order-api alone through Redis, once, whichever servers are chosen.
    OrderApiAlone,
}

impl Servers {
    pub fn name(self) -> &'static str {
        match self {
            Servers::Compared => "compared",
            Servers::Everyone => "everyone",
            Servers::OrderApiAlone => "order-api-alone",
        }
    }

    /// Whether a run of the chosen server `server` belongs to such a scenario.
    pub fn include(self, server: &str) -> bool {
        match self {
            // The references have no auth: ours-jwt would be compared with nothing.
            Servers::Compared => server != OURS_JWT,
            Servers::Everyone => true,
            Servers::OrderApiAlone => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    pub name: &'static str,
    /// SSE connections at full scale.
    pub connections: u32,
    /// Orders per second offered (0 with `Phase::Hold`).
    pub rate: u32,
    /// Customers the streams and orders are spread over at full scale (0: unfiltered streams).
    pub customers: u32,
    pub phase: Phase,
    pub servers: Servers,
    pub description: &'static str,
}

/// Every scenario, in the order a full run takes them and the summary lists them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "fanout-1k-50",
        connections: 1000,
        rate: 50,
        customers: 0,
        phase: Phase::Publish,
        servers: Servers::Compared,
        description: "CPU per delivery and latency below saturation",
    },
    Scenario {
        name: "fanout-1k-100",
        connections: 1000,
        rate: 100,
        customers: 0,
        phase: Phase::Publish,
        servers: Servers::Compared,
        description: "the same, twice the rate",
    },
    Scenario {
        name: "fanout-10k-5",
        connections: 10_000,
        rate: 5,
        customers: 0,
        phase: Phase::Publish,
        servers: Servers::Compared,
        description: "fan-out latency to many sockets",
    },
    Scenario {
        name: "idle-10k",
        connections: 10_000,
        rate: 0,
        customers: 0,
        phase: Phase::Hold,
        servers: Servers::Compared,
        description: "memory per connection, 10,000 connects at once",
    },
    Scenario {
        name: "overload-10k-100",
        connections: 10_000,
        rate: 100,
        customers: 0,
        phase: Phase::Overload,
        servers: Servers::Compared,
        description: "throughput past saturation, publisher starvation",
    },
    Scenario {
        name: "overload-10k-1000",
        connections: 10_000,
        rate: 1000,
        customers: 0,
        phase: Phase::Overload,
        servers: Servers::Compared,
        description: "the same, ten times further",
    },
    Scenario {
        name: "order-api",
        connections: 0,
        rate: 0,
        customers: 0,
        phase: Phase::PostLadder,
        servers: Servers::OrderApiAlone,
        description: "POSTs/s at p99 < 10 ms, against redis-benchmark XADD (runs as order-api-RATE)",
    },
    Scenario {
        name: "scoped-10k-50",
        connections: 10_000,
        rate: 50,
        customers: 1000,
        phase: Phase::Publish,
        servers: Servers::Everyone,
        description: "each stream confined to one of 1,000 customers (its token with ours-jwt, \
                      ?customerId= with the others), the orders spread over them in turn",
    },
    Scenario {
        name: "fanout-10k-50",
        connections: 10_000,
        rate: 50,
        customers: 0,
        phase: Phase::Publish,
        servers: Servers::Everyone,
        description: "the scoped load on unfiltered streams: 10,000 deliveries per order",
    },
    Scenario {
        name: "fanout-10-50",
        connections: 10,
        rate: 50,
        customers: 0,
        phase: Phase::Publish,
        servers: Servers::Everyone,
        description: "as many deliveries per order as scoped-10k-50 (10), from 10 unfiltered streams",
    },
];

/// The scenario named `name`, if there is one.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// The scenarios named in a whitespace-separated list, in its order; every one when it is empty.
pub fn parse_list(list: &str) -> Result<Vec<&'static Scenario>, String> {
    if list.trim().is_empty() {
        return Ok(SCENARIOS.iter().collect());
    }
    list.split_whitespace()
        .map(|name| {
            find(name).ok_or_else(|| {
                let known: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
                format!("unknown scenario `{name}`; the scenarios are: {}", known.join(" "))
            })
        })
        .collect()
}

/// One run of a benchmark plan: a scenario against one server, at a scale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRun {
    pub scenario: &'static Scenario,
    pub server: String,
    pub connections: u32,
    pub customers: u32,
}

impl std::fmt::Display for PlannedRun {
    /// `SCENARIO SERVER CONNECTIONS RATE CUSTOMERS PHASE`: one line `read` splits in a shell.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {}",
            self.scenario.name,
            self.server,
            self.connections,
            self.scenario.rate,
            self.customers,
            self.scenario.phase.name()
        )
    }
}

/// Every run of `scenarios` against the chosen `servers`, scenario by scenario, with the
/// connections and customers divided by `scale` (a quick run). The POST ladder is one entry
/// whatever the servers are: it starts its own.
pub fn plan(scenarios: &[&'static Scenario], servers: &[String], scale: u32) -> Vec<PlannedRun> {
    let scale = scale.max(1);
    let mut runs = Vec::new();
    for &scenario in scenarios {
        let at_scale = |server: &str| PlannedRun {
            scenario,
            server: server.to_owned(),
            connections: scenario.connections / scale,
            customers: scenario.customers / scale,
        };
        if scenario.servers == Servers::OrderApiAlone {
            runs.push(at_scale(OURS_REDIS));
            continue;
        }
        runs.extend(
            servers
                .iter()
                .filter(|server| scenario.servers.include(server))
                .map(|server| at_scale(server)),
        );
    }
    runs
}

/// The table `loadgen scenarios` prints.
pub fn describe() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} {:>11} {:>8} {:>9}  {:<11} {:<15} what it shows",
        "scenario", "connections", "orders/s", "customers", "phase", "servers"
    );
    for s in SCENARIOS {
        let _ = writeln!(
            out,
            "{:<18} {:>11} {:>8} {:>9}  {:<11} {:<15} {}",
            s.name,
            s.connections,
            s.rate,
            s.customers,
            s.phase.name(),
            s.servers.name(),
            s.description
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn servers(names: &str) -> Vec<String> {
        names.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn every_scenario_name_is_unique() {
        let names: HashSet<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), SCENARIOS.len());
    }

    #[test]
    fn every_scenario_fits_one_loadgen_process() {
        for s in SCENARIOS {
            assert!(s.connections <= crate::config::MAX_CONNECTIONS, "{}", s.name);
        }
    }

    #[test]
    fn only_held_and_ladder_scenarios_offer_no_rate() {
        for s in SCENARIOS {
            let publishes = matches!(s.phase, Phase::Publish | Phase::Overload);
            assert_eq!(publishes, s.rate > 0, "{}", s.name);
        }
    }

    #[test]
    fn overload_names_and_phase_agree() {
        // The summary treats undrained overload runs as expected; it finds them by phase.
        for s in SCENARIOS {
            assert_eq!(
                s.name.starts_with("overload-"),
                s.phase == Phase::Overload,
                "{}",
                s.name
            );
        }
    }

    #[test]
    fn the_post_ladder_step_names_do_not_collide_with_a_scenario() {
        let ladder = SCENARIOS.iter().find(|s| s.phase == Phase::PostLadder).unwrap();
        let prefix = format!("{}-", ladder.name);
        assert!(SCENARIOS.iter().all(|s| !s.name.starts_with(&prefix)));
    }

    /// `fanout-1k-50`, `idle-10k`: a kind, then counts (digits, `k` for thousands).
    fn looks_like_scenario(word: &str) -> bool {
        let mut parts = word.split('-');
        let kind = parts.next().unwrap_or_default();
        let counts: Vec<&str> = parts.collect();
        ["fanout", "idle", "overload", "scoped"].contains(&kind)
            && !counts.is_empty()
            && counts.iter().all(|count| {
                let digits = count.strip_suffix('k').unwrap_or(count);
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
            })
    }

    #[test]
    fn every_scenario_the_bench_script_its_docs_and_the_summary_name_is_known() {
        // A scenario renamed here but not there would fail only when someone runs it.
        for (file, text) in [
            ("bench/run.sh", include_str!("../../bench/run.sh")),
            ("BENCHMARKS.md", include_str!("../../BENCHMARKS.md")),
            ("loadgen/src/compare.rs", include_str!("compare.rs")),
        ] {
            for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
                // Plot files are named after their scenario.
                let word = word.trim_end_matches("-latency").trim_end_matches("-timeline");
                if looks_like_scenario(word) {
                    assert!(find(word).is_some(), "{file} names `{word}`, which the table lacks");
                }
            }
        }
    }

    #[test]
    fn an_empty_list_means_every_scenario_in_table_order() {
        let all = parse_list("  ").unwrap();
        assert_eq!(
            all.iter().map(|s| s.name).collect::<Vec<_>>(),
            SCENARIOS.iter().map(|s| s.name).collect::<Vec<_>>()
        );
    }

    #[test]
    fn an_unknown_scenario_is_named_with_the_known_ones() {
        let err = parse_list("fanout-1k-50 fanout-2k-50").unwrap_err();
        assert!(err.contains("`fanout-2k-50`"), "{err}");
        assert!(err.contains("idle-10k"), "{err}");
    }

    #[test]
    fn compared_scenarios_skip_ours_jwt_and_the_scoped_ones_run_against_everyone() {
        let chosen = servers("ours ours-jwt ours-before floor nchan-memory nchan-redis plain-axum");
        let fanout = plan(&parse_list("fanout-1k-50").unwrap(), &chosen, 1);
        assert_eq!(
            fanout.iter().map(|r| r.server.as_str()).collect::<Vec<_>>(),
            [
                "ours",
                "ours-before",
                "floor",
                "nchan-memory",
                "nchan-redis",
                "plain-axum"
            ]
        );
        for scenario in ["scoped-10k-50", "fanout-10k-50", "fanout-10-50"] {
            let runs = plan(&parse_list(scenario).unwrap(), &chosen, 1);
            assert_eq!(
                runs.iter().map(|r| r.server.as_str()).collect::<Vec<_>>(),
                chosen,
                "{scenario}"
            );
        }
    }

    #[test]
    fn the_post_ladder_runs_once_whatever_the_servers() {
        let runs = plan(&parse_list("order-api").unwrap(), &servers("floor"), 1);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].to_string(), "order-api ours-redis 0 0 0 post-ladder");
    }

    #[test]
    fn a_quick_plan_divides_connections_and_customers() {
        let runs = plan(&parse_list("scoped-10k-50 fanout-10-50").unwrap(), &servers("ours"), 5);
        let lines: Vec<String> = runs.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "scoped-10k-50 ours 2000 50 200 publish",
                "fanout-10-50 ours 2 50 0 publish"
            ]
        );
    }
}
