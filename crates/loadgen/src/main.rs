//! `loadgen`: see the crate docs and `loadgen --help`.

use std::io::Write as _;

use clap::Parser as _;
use loadgen::args::{Args, Mode};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Some(Mode::Worker) = args.command {
        return runtime.block_on(loadgen::worker::child_main());
    }
    let report = runtime.block_on(loadgen::run::run(&args))?;
    let json = serde_json::to_string_pretty(&report)?;
    let to_stdout = args.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    match &args.json {
        Some(_) if to_stdout => println!("{json}"),
        Some(path) => std::fs::write(path, json + "\n")?,
        None => {}
    }
    if !args.quiet {
        let human = report.human();
        if to_stdout {
            eprint!("{human}");
        } else {
            print!("{human}");
        }
        std::io::stdout().flush()?;
    }
    Ok(())
}
