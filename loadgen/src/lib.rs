//! SSE load generator for sse-orders and the servers it is compared with.
//!
//! Layout:
//! - `config`: the command line (`loadgen run`, `loadgen report`, `loadgen bench-plan`, ...).
//! - `scenarios`: the benchmark scenarios, the one list `bench/run.sh` and the summary follow.
//! - `run`: one scenario from connect to report; `subscriber` holds the SSE connections
//!   (one thread, one shared read buffer) and judges every delivered event; `publisher`
//!   creates events on schedule from its own thread; `ledger` is what they share (when each
//!   sequence number was sent and answered).
//! - `http` and `sse`: hand-written HTTP/1.1 and streaming SSE decoding.
//! - `procstat`: server and own CPU and memory from /proc; `server_metrics`: the fan-out
//!   writer's own CPU, from the server's `/metrics`.
//! - `slowloris`: sockets that trickle request heads, with probes of new clients and a stream.
//! - `report`: the JSON report and human summary; `plot`: PNG plots; `compare`: the
//!   side-by-side summary of a results folder.
//!
//! The bench-only reference servers are the `plain-axum` and `floor` binaries in `src/bin/`.
#![forbid(unsafe_code)]

pub mod compare;
pub mod config;
pub mod http;
pub mod ledger;
pub mod plot;
pub mod procstat;
pub mod publisher;
pub mod report;
pub mod run;
pub mod scenarios;
pub mod server_metrics;
pub mod slowloris;
pub mod sse;
pub mod subscriber;

use std::path::Path;

use anyhow::Context as _;

use crate::report::RunReport;

/// Writes the JSON report and, unless disabled, the two plots beside it.
pub fn write_outputs(report: &RunReport, out: &Path, plots: bool) -> anyhow::Result<()> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let json = serde_json::to_vec_pretty(report).context("encoding the report")?;
    std::fs::write(out, json).with_context(|| format!("writing {}", out.display()))?;
    if !plots || report.latency_cdf_ms.is_empty() {
        return Ok(());
    }
    if !plot::font_available() {
        eprintln!("no TrueType font found (install fonts-dejavu-core): plots skipped");
        return Ok(());
    }
    let stem = out.with_extension("");
    let title = format!("{} / {}", report.scenario, report.server);
    let latency = stem.with_file_name(format!("{}-latency.png", file_name(&stem)));
    let timeline = stem.with_file_name(format!("{}-timeline.png", file_name(&stem)));
    let drawn = plot::latency_cdf(
        &latency,
        &format!("{title}: latency CDF"),
        &[(report.server.clone(), report.latency_cdf_ms.clone())],
    )
    .and_then(|()| {
        plot::timeline(
            &timeline,
            &format!("{title}: deliveries/s"),
            &[(
                report.server.clone(),
                report.timeline.bucket_ms,
                report.timeline.deliveries_per_s.clone(),
            )],
        )
    });
    if let Err(e) = drawn {
        eprintln!("plotting failed: {e}");
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
