//! `lepusctl`: operate a broker from the command line through its
//! RabbitMQ-compatible management HTTP API, so the same commands work
//! against Lepus and against RabbitMQ. Commands are named after
//! `rabbitmqctl`'s (`list queues` is `list_queues`); exit codes are its
//! sysexits ones (see `failure.rs`).
//!
//! ```text
//!  argv ── clap (cli.rs) ── commands.rs ── http.rs (ureq, Basic auth) ── /api/...
//!                              └── output.rs (table | json | tsv)
//! ```

mod cli;
mod commands;
mod failure;
mod http;
mod kinds;
mod objects;
mod output;

use std::process::ExitCode;

use clap::Parser;

use cli::Cli;
use failure::{EXIT_OK, EXIT_USAGE};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match commands::run(cli) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(failure) => {
            eprintln!("Error: {failure}");
            ExitCode::from(failure.code)
        }
    }
}
