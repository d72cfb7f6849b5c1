//! `herald-bench` binary: see the library documentation and `bench/README.md`.

use std::process::ExitCode;

use clap::Parser;

use herald_bench::cli::{Cli, Scenario};
use herald_bench::{coord, floor, rawnats, rpc, worker};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Scenario::Worker = cli.command {
        return worker::main();
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, async move {
        match cli.command {
            Scenario::Idle(a) => coord::idle(a).await,
            Scenario::Fanout(a) => coord::fanout(a).await,
            Scenario::Personal(a) => coord::personal(a).await,
            Scenario::Churn(a) => coord::churn(a).await,
            Scenario::Storm(a) => coord::storm(a).await,
            Scenario::Api(a) => coord::api(a).await,
            Scenario::Floor(a) => floor::run(a).await,
            Scenario::Rpc(a) => rpc::run(a).await,
            Scenario::NatsPub(a) => rawnats::run(a).await,
            Scenario::Worker => unreachable!("handled above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
