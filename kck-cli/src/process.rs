//! The long-running commands, `serve` and `worker`, and the signals that
//! stop them and the others.

use std::future::Future;
use std::io::Write as _;
use std::time::Duration;

use kck_admin::AdminConfig;
use kck_core::Cache;
use kck_core::refresh::{Scheduler, Worker};
use tokio::sync::watch;

use crate::{CliError, ServeArgs, WorkerArgs};

/// Ctrl-C (SIGINT) and SIGTERM, caught from the moment this is made.
pub(crate) struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Catches them from now on (a signal that comes before the first
    /// [`Signals::recv`] is not lost).
    pub(crate) fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = signal(SignalKind::interrupt())
                .and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
                .ok();
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next signal.
    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some((int, term)) = &mut self.streams {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs steps of work until a signal comes: a command that goes through
/// many keys stops between two of them, or drops the one in progress.
pub(crate) struct Interrupt {
    signals: Signals,
    fired: bool,
}

impl Interrupt {
    /// Listens from now on.
    pub(crate) fn new() -> Self {
        Interrupt {
            signals: Signals::new(),
            fired: false,
        }
    }

    /// `work`'s output, or `None` if a signal came first (or before).
    pub(crate) async fn run<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        if self.fired {
            return None;
        }
        tokio::select! {
            biased;
            () = self.signals.recv() => {
                self.fired = true;
                None
            }
            output = work => Some(output),
        }
    }
}

/// A line on standard output for whoever watches; a closed pipe is not
/// the process's failure (Rust ignores SIGPIPE: `println!` would panic).
fn say(line: &str) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

pub(crate) async fn serve(cache: &Cache, args: &ServeArgs) -> Result<(), CliError> {
    let bad = |error: &dyn std::fmt::Display| CliError::BadInput(error.to_string());
    let mut config = AdminConfig::from_env().map_err(|e| bad(&e))?;
    if !args.tokens.is_empty() {
        config = config
            .tokens_from(&args.tokens.join(","))
            .map_err(|e| bad(&e))?;
    }
    if !config.has_tokens() {
        config = config.insecure_no_auth();
    }
    let bound = kck_admin::bind(cache.clone(), config, args.addr)
        .await
        .map_err(|e| bad(&e))?;
    let mut signals = Signals::new();
    say(&format!("kck admin page: http://{}/", bound.local_addr()));
    tokio::select! {
        served = bound.run() => served.map_err(|e| CliError::Failed(e.to_string())),
        () = signals.recv() => {
            say("stopped");
            Ok(())
        }
    }
}

pub(crate) async fn worker(cache: &Cache, args: &WorkerArgs) -> Result<(), CliError> {
    if args.concurrency == 0 {
        return Err(CliError::BadInput(
            "--concurrency must be at least 1".into(),
        ));
    }
    if args.retries == 0 {
        return Err(CliError::BadInput("--retries must be at least 1".into()));
    }
    let (stop, stopped) = watch::channel(false);
    let signal = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let worker = Worker::builder(cache)
        .concurrency(args.concurrency)
        .job_timeout(args.job_timeout)
        .retries(
            args.retries,
            Duration::from_secs(1),
            Duration::from_secs(300),
        )
        .grace_period(args.grace)
        .shutdown(signal(stopped.clone()))
        .build();
    let scheduler =
        (!args.no_scheduler).then(|| Scheduler::builder(cache).shutdown(signal(stopped)).build());
    let grace = args.grace;
    let mut signals = Signals::new();
    let listener = tokio::spawn(async move {
        signals.recv().await;
        // Stop first: saying so may fail (a closed pipe), stopping must not.
        let _ = stop.send(true);
        say(&format!(
            "stopping: running jobs have {} to finish, then go back to the queue \
             (a second signal stops at once)",
            crate::out::span(grace)
        ));
        signals.recv().await;
        let _ = writeln!(
            std::io::stderr(),
            "stopped at once: running jobs go back to the queue when their claims run out"
        );
        std::process::exit(130);
    });
    say(&format!(
        "worker {}: {} jobs at once, job time-out {}, {} attempts{}",
        std::process::id(),
        args.concurrency,
        crate::out::span(args.job_timeout),
        args.retries,
        if scheduler.is_some() {
            ", with a scheduler"
        } else {
            ""
        }
    ));
    let ran = match scheduler {
        Some(scheduler) => tokio::try_join!(worker.run(), scheduler.run()).map(drop),
        None => worker.run().await,
    };
    // The listener stays: a second signal during the settling that
    // follows still stops at once.
    drop(listener);
    ran?;
    say("stopped");
    Ok(())
}
