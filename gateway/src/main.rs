//! The `keygate` command.

use clap::Parser;
use keygate::config::{Cli, Command, Config, PluginCommand};
use std::process::ExitCode;

/// jemalloc: keygate allocates and frees small buffers on every request (headers, frames,
/// messages) from several threads; glibc's malloc spent a tenth of keygate's CPU on them.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (args, check_only) = match &cli.command {
        Command::Serve(args) => (args, false),
        Command::CheckConfig(args) => (args, true),
        Command::Plugin(PluginCommand::Check { file, config }) => {
            return match keygate::policy::check::check(file, config.as_deref()) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("keygate: plugin {file}: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    let config = match Config::load(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("keygate: {e}");
            return ExitCode::from(2);
        }
    };
    if check_only {
        println!("{config:#?}");
        return ExitCode::SUCCESS;
    }
    init_logging(&config);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.server.worker_threads > 0 {
        runtime.worker_threads(config.server.worker_threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keygate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(keygate::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keygate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
