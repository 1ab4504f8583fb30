//! The `feedmerge` command line: parse arguments, start logging, call into
//! the library, and turn errors into messages and exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use feedmerge::config::{self, Config, ConfigError};
use feedmerge::feeds::Selector;
use feedmerge::logging;
use feedmerge::store::StoreError;
use tokio_util::sync::CancellationToken;

/// Polls news feeds and republishes them as merged Atom feeds.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// How log lines (on stderr) are written.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: poll every source on its schedule and serve the feeds.
    Run {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Poll every source (or one) once, store, print a line per source.
    Fetch {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Poll only this source.
        #[arg(long)]
        source: Option<String>,
    },
    /// Print a published feed from the store.
    Export {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// The `[[feeds]]` output to print; default: the merged feed.
        #[arg(long, conflicts_with = "source")]
        feed: Option<String>,
        /// Print this source's own feed instead.
        #[arg(long)]
        source: Option<String>,
    },
    /// Show which copies were merged into an entry's story, and by which rule.
    Explain {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// An entry id (`urn:feedmerge:entry:...`) from any published feed.
        entry_id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show each source's status (asks the daemon when it holds the store).
    Sources {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make the running daemon reload its configuration file (as SIGHUP
    /// does) and print the result.
    Reload {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Rebuild the store into a fresh directory, keeping everything: it
    /// then holds only the pages its keys need (smaller, less memory at
    /// start). Stop the daemon first.
    Compact {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check the configuration file.
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print an OPML file's feeds as `[[sources]]` TOML, to append to a config.
    ImportOpml {
        /// The OPML file (any encoding).
        file: PathBuf,
        /// Name the sources apart from this config's, and leave out its URLs.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the configured sources as OPML 2.0.
    ExportOpml {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// The log level of every command but `run`.
const CLI_LOG_LEVEL: &str = "warn";
/// Exit code for a configuration error.
const EXIT_CONFIG: u8 = 2;
/// Exit code for any other failure.
const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    feedmerge::malloc::cap_arenas();
    let cli = Cli::parse();

    let config_path = match &cli.command {
        Command::ImportOpml { file, config: None } => {
            return match print_import(file, None) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(EXIT_FAILURE)
                }
            };
        }
        Command::ImportOpml {
            config: Some(config),
            ..
        }
        | Command::ExportOpml { config }
        | Command::Run { config }
        | Command::Fetch { config, .. }
        | Command::Export { config, .. }
        | Command::Sources { config, .. }
        | Command::Explain { config, .. }
        | Command::Reload { config }
        | Command::Compact { config }
        | Command::Check { config } => config.clone(),
    };
    let config = match load_config(&config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let format = match cli.log_format {
        LogFormat::Text => logging::Format::Text,
        LogFormat::Json => logging::Format::Json,
    };
    // The daemon logs at the config's level; the other commands print
    // their results on stdout, and log only warnings unless the file's
    // `[log] level` or FEEDMERGE_LOG asks for more (a line per source on
    // stderr would repeat stdout).
    let level = match cli.command {
        Command::Run { .. } => config.log.level.as_str(),
        _ if config.log.level_set => config.log.level.as_str(),
        _ => CLI_LOG_LEVEL,
    };
    logging::init(format, level);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(dispatch(cli.command, config.clone()));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(StoreError::Locked { .. }) = e.downcast_ref::<StoreError>() {
                eprintln!(
                    "hint: another feedmerge daemon holds this store; `feedmerge fetch`, \
                     `export`, `sources`, `explain` and `reload` ask it over its control \
                     socket {}",
                    feedmerge::control::socket_path(&config.storage.path).display()
                );
            }
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn load_config(path: &Path) -> Result<Config, ConfigError> {
    config::load(path)
}

async fn dispatch(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Compact { .. } => {
            let path = config.storage.path.clone();
            let rebuilt =
                tokio::task::spawn_blocking(move || feedmerge::app::compact(&config)).await??;
            println!(
                "rebuilt {}: {} keys in {} trees, {} -> {} on disk",
                path.display(),
                rebuilt.keys,
                rebuilt.trees,
                bytesize::ByteSize(rebuilt.bytes_before),
                bytesize::ByteSize(rebuilt.bytes_after)
            );
        }
        Command::Check { .. } => {
            println!(
                "{}: ok ({} sources, {} extra feeds)",
                config.path.display(),
                config.sources.len(),
                config.feeds.len()
            );
        }
        Command::Run { .. } => {
            let shutdown = CancellationToken::new();
            let signals = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                signals.cancel();
            });
            // Listening for SIGHUP before the daemon starts: its default
            // action would end the process.
            let hangups = hangups();
            let daemon = feedmerge::app::start(config, shutdown.clone()).await?;
            reload_on_hangup(hangups, daemon.reloader(), shutdown);
            daemon.wait().await?;
        }
        Command::Fetch { source, .. } => {
            let bar = progress_bar();
            let on_report = |_: &feedmerge::poll::PollReport, total: usize| {
                if let Some(bar) = &bar {
                    bar.set_length(total as u64);
                    bar.inc(1);
                }
            };
            let summary = feedmerge::app::fetch(config, source.as_deref(), &on_report).await;
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            let summary = summary?;
            for line in &summary.lines {
                println!("{line}");
            }
            // A failing source is data, not a failed run: it is in the
            // lines and the count.
            println!("{}", summary.closing_line());
        }
        Command::Reload { .. } => {
            let status = feedmerge::app::reload(&config).await?;
            if status.ok {
                println!("reloaded: {}", status.message);
            } else {
                eprintln!(
                    "reload refused, the daemon runs on its previous config: {}",
                    status.message
                );
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
        }
        Command::Sources { json, .. } => {
            let statuses = feedmerge::app::sources(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&statuses)?);
            } else {
                print!("{}", feedmerge::status::table(&statuses));
            }
        }
        Command::Export { feed, source, .. } => {
            let selector = match (&feed, &source) {
                (Some(name), _) => Selector::Output(name),
                (None, Some(name)) => Selector::Source(name),
                (None, None) => Selector::Merged,
            };
            let xml = feedmerge::app::export(&config, selector).await?;
            print!("{xml}");
        }
        Command::ImportOpml { file, .. } => print_import(&file, Some(&config))?,
        Command::ExportOpml { .. } => {
            let export = feedmerge::app::export_opml(&config).await?;
            for note in &export.notes {
                eprintln!("{note}");
            }
            print!("{}", export.xml);
        }
        Command::Explain { entry_id, json, .. } => {
            let report = feedmerge::app::explain(&config, &entry_id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", feedmerge::status::explain_text(&report));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the sources of OPML `file` as TOML, and what was left out on
/// stderr.
fn print_import(file: &Path, config: Option<&Config>) -> anyhow::Result<()> {
    let import = feedmerge::app::import_opml(file, config)?;
    for note in &import.notes {
        eprintln!("{}: {note}", file.display());
    }
    eprintln!("{}: {} sources", file.display(), import.sources.len());
    print!("{}", feedmerge::opml::to_toml(&import.sources)?);
    Ok(())
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

/// The SIGHUP stream, if it can be had.
fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(hangups) => Some(hangups),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload needs a restart");
                None
            }
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Reloads the config on every SIGHUP (`systemctl reload`) until shutdown.
/// The result is logged by the reload itself.
fn reload_on_hangup(
    hangups: Hangups,
    reloader: feedmerge::app::Reloader,
    shutdown: CancellationToken,
) {
    #[cfg(unix)]
    {
        let Some(mut hangups) = hangups else {
            return;
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    received = hangups.recv() => {
                        if received.is_none() || reloader.reload().await.is_none() {
                            return;
                        }
                    }
                    () = shutdown.cancelled() => return,
                }
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (hangups, reloader, shutdown);
    }
}

/// A progress bar on stderr when it is a terminal; none in a pipe.
fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} sources polled {wide_bar}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    Some(bar)
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
