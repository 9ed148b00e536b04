//! # kck-cli: the command line of an application that uses kck
//!
//! Primers live in the application's binary, so the command line does
//! too: the application calls [`run`] from `main` with its
//! [`CacheBuilder`] (its registry, its state, its stubs) and its binary
//! gains these subcommands:
//!
//! | command | what |
//! |---|---|
//! | `serve` | the admin page and API of `kck-admin` |
//! | `worker` | a worker and a scheduler, until SIGTERM or Ctrl-C |
//! | `status` | per primer: products by state, pending, running and failed jobs, the most overdue job |
//! | `get KEY` | the product's value as JSON (`--meta`: with its metadata; `--cached`: only if stored) |
//! | `explain KEY` | why the product is in its state, and what the next read would do |
//! | `refresh KEY` / `refresh --primer P` | computes now |
//! | `invalidate KEY`, `remove KEY` | marks stale with its dependents; removes |
//! | `jobs [--failed\|--pending\|--running]`, `retry ID\|--all-failed` | the refresh queue |
//! | `warm --primer P` | computes a primer's domain, with a progress bar |
//! | `dump FILE`, `load FILE` | every entry as JSON lines, and back |
//!
//! ```no_run
//! use std::process::ExitCode;
//!
//! use kck_core::{Cache, Ctx, primer};
//!
//! #[primer(key = "square/{n}", refresh = "5m")]
//! async fn square(_ctx: &Ctx, n: u64) -> Result<u64, kck_core::error::BoxError> {
//!     Ok(n * n)
//! }
//!
//! #[tokio::main]
//! async fn main() -> ExitCode {
//!     // `my-app worker`, `my-app explain square/4`, `my-app --help`…
//!     kck_cli::run(Cache::builder()).await
//! }
//! ```
//!
//! An application with commands of its own puts [`Command`] among them
//! (`#[command(flatten)]`) and hands it to [`execute`]; `examples/registers`
//! does.
//!
//! ## The store
//!
//! The commands work on the application's shared store: PostgreSQL, from
//! `--database-url`, else `KCK_DATABASE_URL`, else `DATABASE_URL` (with
//! `KCK_DATABASE_REPLICA_URLS`, as [`PgStoreBuilder::from_env`]). Without
//! one, a command fails with exit code 2 rather than look at an empty
//! in-memory store and report that nothing is there; `--memory` asks for
//! that store on purpose (to try the commands out).
//!
//! ## For scripts
//!
//! Tables for people by default, `--json` for scripts (the shapes of
//! `kck-admin`'s API). Errors are one line on standard error, and the exit
//! code says which kind ([`CliError::code`]): 0 ok, 1 not found, 2 bad
//! input (clap's usage errors included), 3 store unreachable, 4 failed,
//! 130 interrupted.

mod act;
pub mod dump;
mod error;
mod inspect;
mod out;
mod process;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use kck_core::{Cache, CacheBuilder};
use kck_diesel::{Migrations, PgStore, PgStoreBuilder};

pub use crate::error::CliError;
use crate::out::Out;

/// The kck commands of an application, with the options they share.
#[derive(Debug, Parser)]
#[command(version, about = "Look at and steer this application's kck cache.")]
pub struct Cli {
    /// Where the cache is, and how to print.
    #[command(flatten)]
    pub options: Options,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The options every command takes.
#[derive(Debug, Clone, Default, Args)]
pub struct Options {
    /// The PostgreSQL URL of the cache's store (default: $KCK_DATABASE_URL,
    /// else $DATABASE_URL); TLS and the rest as in libpq's URLs
    /// (`?sslmode=verify-full&sslrootcert=ca.pem`)
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// Use a store in this process's memory, empty at start, instead of
    /// PostgreSQL: to try the commands out
    #[arg(long, global = true, conflicts_with = "database_url")]
    pub memory: bool,

    /// Print JSON (one document, or one per line for streams) instead of
    /// tables
    #[arg(long, global = true)]
    pub json: bool,
}

/// A kck command.
#[derive(Debug, Clone, Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// Serves the admin page and its API (kck-admin) until Ctrl-C or
    /// SIGTERM
    Serve(ServeArgs),
    /// Runs a worker and a scheduler: claims refresh jobs, runs them, and
    /// queues the scheduled ones, until Ctrl-C or SIGTERM; then lets the
    /// running jobs finish (up to --grace) and gives back the others
    Worker(WorkerArgs),
    /// Per primer: its products by state, its pending, running and failed
    /// refresh jobs, and how overdue its most overdue pending job is
    Status,
    /// Prints a product's value as JSON, computing it if needed, as a read
    /// by the application would
    Get {
        /// The product's key, as `primer/param/...` (see `status` for the
        /// primers)
        key: String,
        /// Print its metadata too: version, times, state, last error
        #[arg(long)]
        meta: bool,
        /// Only print what is stored; never compute (exit code 1 if nothing
        /// is stored)
        #[arg(long)]
        cached: bool,
    },
    /// Explains why a product is in its state: its deadlines, its last
    /// computation, its last error, each dependency with its own state and
    /// version, its jobs, and what the next read would do
    Explain {
        /// The product's key
        key: String,
    },
    /// Computes a product now (or each stored product of a primer), and
    /// stores it
    Refresh {
        /// The product's key
        #[arg(required_unless_present = "primer", conflicts_with = "primer")]
        key: Option<String>,
        /// Every stored product of this primer, one after the other
        #[arg(long, value_name = "PRIMER")]
        primer: Option<String>,
    },
    /// Marks a product and everything that read it stale: the next reads
    /// serve them and queue their refresh
    Invalidate {
        /// The product's key
        key: String,
    },
    /// Removes a stored product (what read it stays, and recomputes it when
    /// it next needs it)
    Remove {
        /// The product's key
        key: String,
    },
    /// Lists the refresh jobs: pending, running and failed
    Jobs(JobsArgs),
    /// Puts a failed job back in the queue, due now
    Retry {
        /// The job's id (see `jobs --failed`)
        #[arg(required_unless_present = "all_failed", conflicts_with = "all_failed")]
        id: Option<i64>,
        /// Every failed job
        #[arg(long)]
        all_failed: bool,
    },
    /// Computes every product of a primer's domain that is not fresh, with
    /// a progress bar, and sums up
    Warm {
        /// The primer, which must declare a domain (`#[primer(domain = ...)]`)
        #[arg(long, value_name = "PRIMER")]
        primer: String,
    },
    /// Writes every entry (value, metadata, version, dependencies) to FILE
    /// as JSON lines, streamed page by page (`-` for standard output)
    Dump {
        /// Where to write; an existing file is replaced only once the dump
        /// is complete
        file: PathBuf,
    },
    /// Loads a dump: checks the whole file first (nothing is written from
    /// a truncated or corrupt one), then writes its entries, each at a new
    /// version of this store
    Load(LoadArgs),
}

/// The options of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The address to listen on
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub addr: SocketAddr,
    /// An API token, as `read:SECRET` or `admin:SECRET`; repeat for more
    /// (also from $KCK_ADMIN_TOKENS, comma-separated). Without any, only a
    /// loopback address is served, without auth
    #[arg(long = "token", value_name = "SCOPE:SECRET")]
    pub tokens: Vec<String>,
}

/// The options of `worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// How many jobs run at once
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub concurrency: usize,
    /// How long one job may run before it counts as a failed attempt (as
    /// `90s`, `5m`)
    #[arg(long, default_value = "5m", value_parser = duration, value_name = "DURATION")]
    pub job_timeout: Duration,
    /// At most this many attempts per job before it is kept as failed
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub retries: u32,
    /// After the signal to stop, how long running jobs may take to finish;
    /// those still running then are given back to the queue
    #[arg(long, default_value = "30s", value_parser = duration, value_name = "DURATION")]
    pub grace: Duration,
    /// Run no scheduler in this process (another process runs one)
    #[arg(long)]
    pub no_scheduler: bool,
}

/// The options of `jobs`.
#[derive(Debug, Clone, Args)]
pub struct JobsArgs {
    /// Only the failed ones
    #[arg(long, conflicts_with_all = ["pending", "running"])]
    pub failed: bool,
    /// Only the pending ones
    #[arg(long, conflicts_with = "running")]
    pub pending: bool,
    /// Only the running ones
    #[arg(long)]
    pub running: bool,
    /// At most this many of each kind
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: usize,
}

/// The options of `load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// The dump to load
    pub file: PathBuf,
    /// Replace the products the store already holds (default: keep them,
    /// so that loading again after an interruption goes on where it
    /// stopped)
    #[arg(long)]
    pub replace: bool,
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| error.to_string())
}

/// Parses the process's arguments and runs the command on the cache
/// `builder` makes; prints errors on standard error. Returns the exit code
/// (see [`CliError::code`]); `--help`, `--version` and usage errors exit
/// as clap has them.
pub async fn run(builder: CacheBuilder) -> ExitCode {
    let cli = Cli::parse();
    execute(&cli.options, cli.command, builder).await
}

/// Runs `command` on the cache `builder` makes, with the store `options`
/// name; prints errors on standard error and returns the exit code. For an
/// application that parses its own arguments and flattens [`Command`] and
/// [`Options`] into them.
pub async fn execute(options: &Options, command: Command, builder: CacheBuilder) -> ExitCode {
    match try_execute(options, command, builder).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}

/// [`execute`], returning the error instead of printing it.
///
/// # Errors
///
/// See [`CliError`].
pub async fn try_execute(
    options: &Options,
    command: Command,
    builder: CacheBuilder,
) -> Result<(), CliError> {
    let cache = open(options, builder, migrations_for(&command)).await?;
    let out = Out::new(options.json);
    let done = match command {
        Command::Serve(args) => process::serve(&cache, &args).await,
        Command::Worker(args) => process::worker(&cache, &args).await,
        Command::Status => inspect::status(&cache, &out).await,
        Command::Get { key, meta, cached } => inspect::get(&cache, &out, &key, meta, cached).await,
        Command::Explain { key } => inspect::explain(&cache, &out, &key).await,
        Command::Refresh { key, primer } => match (key, primer) {
            (Some(key), _) => act::refresh(&cache, &out, &key).await,
            (None, Some(primer)) => act::refresh_primer(&cache, &out, &primer).await,
            (None, None) => Err(CliError::BadInput("refresh: give a KEY or --primer".into())),
        },
        Command::Invalidate { key } => act::invalidate(&cache, &out, &key).await,
        Command::Remove { key } => act::remove(&cache, &out, &key).await,
        Command::Jobs(args) => inspect::jobs(&cache, &out, &args).await,
        Command::Retry { id, all_failed } => act::retry(&cache, &out, id, all_failed).await,
        Command::Warm { primer } => act::warm(&cache, &out, &primer).await,
        Command::Dump { file } => dump::dump_command(&cache, &out, &file).await,
        Command::Load(args) => dump::load_command(&cache, &out, &args).await,
    };
    // A computation delivers its value before it gives its lease back and
    // tells its dependents: let that finish before the process ends, or
    // the product looks computed by someone until the lease runs out.
    let mut signals = process::Signals::new();
    tokio::select! {
        _ = tokio::time::timeout(SETTLE, cache.wait_idle()) => {}
        () = signals.recv() => return Err(CliError::Interrupted("interrupted while settling".into())),
    }
    done
}

/// Whether `command` may create or upgrade kck's tables. The ones that only
/// look, or act on what is stored, change no schema: pointed at the wrong
/// database, they say it has no kck tables instead of creating them there.
fn migrations_for(command: &Command) -> Migrations {
    match command {
        Command::Status
        | Command::Explain { .. }
        | Command::Jobs(_)
        | Command::Dump { .. }
        | Command::Invalidate { .. }
        | Command::Remove { .. }
        | Command::Retry { .. }
        | Command::Get { cached: true, .. } => Migrations::Require,
        Command::Serve(_)
        | Command::Worker(_)
        | Command::Get { cached: false, .. }
        | Command::Refresh { .. }
        | Command::Warm { .. }
        | Command::Load(_) => Migrations::Apply,
    }
}

/// How long a command waits, once done, for its computations to settle.
const SETTLE: Duration = Duration::from_secs(10);

/// The cache the commands work on: the application's, on the store the
/// options name, with no worker or scheduler of its own (`worker` runs
/// them itself).
async fn open(
    options: &Options,
    builder: CacheBuilder,
    migrations: Migrations,
) -> Result<Cache, CliError> {
    let builder = builder.local_worker(false).local_scheduler(false);
    let builder = if options.memory {
        builder
    } else {
        let store = match &options.database_url {
            Some(url) => PgStore::builder(url),
            None => PgStoreBuilder::from_env().map_err(|_| {
                CliError::BadInput(
                    "no database: set KCK_DATABASE_URL or pass --database-url \
                     (or --memory for a store of this process's own)"
                        .into(),
                )
            })?,
        };
        builder.store(store.migrations(migrations).connect().await?)
    };
    builder
        .build()
        .map_err(|error| CliError::BadInput(error.to_string()))
}
