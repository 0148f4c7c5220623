//! `loadgen`: run a scenario against an SSE server, plan a benchmark, or summarise a folder of runs.
#![forbid(unsafe_code)]

use clap::Parser;
use loadgen::config::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(config) => {
            if let Err(message) = config.validate() {
                eprintln!("error: {message}");
                std::process::exit(2);
            }
            let report = loadgen::run::run(&config)?;
            print!("{}", report.summary());
            if let Some(out) = &config.out {
                loadgen::write_outputs(&report, out, !config.no_plots)?;
            }
        }
        Command::Slowloris(config) => {
            if !config.url.addr.ip().is_loopback() {
                eprintln!("error: --url {} is not a loopback address", config.url);
                std::process::exit(2);
            }
            let report = loadgen::slowloris::run(&config)?;
            print!("{}", report.summary());
            if let Some(out) = &config.out {
                if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(out, serde_json::to_vec_pretty(&report)?)?;
            }
        }
        Command::Scenarios => print!("{}", loadgen::scenarios::describe()),
        Command::BenchPlan(config) => {
            for run in loadgen::scenarios::plan(&config.scenarios.0, &config.servers.0, config.scale) {
                println!("{run}");
            }
        }
        Command::Report(config) => {
            let out = loadgen::compare::write(&config)?;
            println!("wrote {}", out.display());
        }
    }
    Ok(())
}
