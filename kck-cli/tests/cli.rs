//! The command line as an operator meets it: `kck-demo` (this crate's demo
//! application) run as a process, its output and its exit codes.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use kck_testing::postgres::TestDatabase;
use serde_json::Value;

const DEMO: &str = env!("CARGO_BIN_EXE_kck-demo");

/// The demo, with none of the environment's kck settings.
fn demo() -> Command {
    let mut command = Command::new(DEMO);
    for var in [
        "KCK_DATABASE_URL",
        "DATABASE_URL",
        "KCK_DATABASE_REPLICA_URLS",
        "KCK_ADMIN_TOKENS",
    ] {
        command.env_remove(var);
    }
    command
}

/// The demo on `database`.
fn on(database: &TestDatabase) -> Command {
    let mut command = demo();
    command.env("KCK_DATABASE_URL", database.url());
    command
}

/// Runs `command` with `args`; returns its standard output after checking
/// its exit code, and that standard error holds no panic.
fn run(mut command: Command, args: &[&str], code: i32) -> (String, String) {
    let output = command.args(args).assert().code(code).get_output().clone();
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{args:?}: {stderr}"
    );
    (stdout, stderr)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn usage_errors_are_claps_and_exit_2() {
    let (_, stderr) = run(demo(), &["frobnicate"], 2);
    assert!(
        stderr.contains("unrecognized subcommand 'frobnicate'"),
        "{stderr}"
    );
    let (_, stderr) = run(demo(), &["status", "--frobnicate"], 2);
    assert!(
        stderr.contains("unexpected argument '--frobnicate'"),
        "{stderr}"
    );
    let (_, stderr) = run(demo(), &["get"], 2);
    assert!(stderr.contains("<KEY>"), "{stderr}");
    let (_, stderr) = run(demo(), &["worker", "--job-timeout", "soon"], 2);
    assert!(stderr.contains("invalid value 'soon'"), "{stderr}");
    let (_, stderr) = run(demo(), &["refresh", "square/1", "--primer", "square"], 2);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let (stdout, _) = run(demo(), &["--help"], 0);
    for command in [
        "serve", "worker", "status", "explain", "dump", "load", "warm",
    ] {
        assert!(stdout.contains(command), "{command} in --help: {stdout}");
    }
    let (stdout, _) = run(demo(), &["load", "--help"], 0);
    assert!(stdout.contains("--replace"), "{stdout}");
}

#[test]
fn without_a_database_it_says_how_to_give_one() {
    let (_, stderr) = run(demo(), &["status"], 2);
    assert_eq!(
        stderr.trim(),
        "error: no database: set KCK_DATABASE_URL or pass --database-url (or --memory for a \
         store of this process's own)"
    );
}

#[test]
fn an_unreachable_database_is_one_line_and_exit_3() {
    let (_, stderr) = run(
        demo(),
        &[
            "--database-url",
            "postgres://postgres@127.0.0.1:1/none",
            "status",
        ],
        3,
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: cannot reach PostgreSQL at 127.0.0.1:1"),
        "{stderr}"
    );
    let (_, stderr) = run(demo(), &["--database-url", "mysql://x", "status"], 2);
    assert!(
        stderr.starts_with("error: invalid PostgreSQL URL"),
        "{stderr}"
    );
}

#[test]
fn keys_and_primers_are_checked_and_failures_exit_4() {
    let memory = || {
        let mut command = demo();
        command.arg("--memory");
        command
    };
    let (stdout, _) = run(memory(), &["get", "sum_of_squares/3"], 0);
    assert_eq!(stdout.trim(), "14");
    let (_, stderr) = run(memory(), &["get", "nope/3"], 2);
    assert!(stderr.contains("unknown primer `nope`"), "{stderr}");
    let (_, stderr) = run(memory(), &["get", "square/three"], 2);
    assert!(
        stderr.contains("parameter `n` of key `square/three` is invalid"),
        "{stderr}"
    );
    let (_, stderr) = run(memory(), &["explain", "square/1/2"], 2);
    assert!(stderr.starts_with("error: "), "{stderr}");
    let (_, stderr) = run(memory(), &["get", "half/3"], 4);
    assert_eq!(stderr.trim(), "error: computing `half/3` failed: 3 is odd");
    let (_, stderr) = run(memory(), &["get", "--cached", "square/3"], 1);
    assert_eq!(stderr.trim(), "error: no product square/3 is stored");
    let (_, stderr) = run(memory(), &["warm", "--primer", "half"], 2);
    assert!(stderr.contains("declares no domain"), "{stderr}");
}

/// One database, the commands one after the other as an operator would
/// type them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_session_on_postgres() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let db = || on(&database);

    // A command that only looks creates no kck tables where there are none:
    // pointed at the wrong database, it says so.
    for args in [
        &["status"][..],
        &["get", "--cached", "square/2"],
        &["dump", "-"],
    ] {
        let (stdout, stderr) = run(db(), args, 1);
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(stderr.contains("has no kck tables"), "{args:?}: {stderr}");
    }
    // The application creates them when it starts.
    database.connect().await;

    // Nothing stored yet: explain says what a read would do.
    let (stdout, _) = run(db(), &["explain", "sum_of_squares/3"], 0);
    assert!(stdout.contains("state: nothing is stored"), "{stdout}");
    assert!(stdout.contains("└─ next read: computed now"), "{stdout}");

    let (stdout, _) = run(db(), &["get", "sum_of_squares/3"], 0);
    assert_eq!(stdout.trim(), "14");
    let (stdout, _) = run(db(), &["--json", "get", "--meta", "square/2"], 0);
    let meta = json(&stdout);
    assert_eq!(meta["value"], 4);
    assert_eq!(meta["state"], "fresh");
    assert_eq!(meta["dependents"][0]["key"], "sum_of_squares/3");

    // The tree: deadlines, dependencies with their states and versions.
    let (stdout, _) = run(db(), &["explain", "sum_of_squares/3"], 0);
    for expected in [
        "sum_of_squares/3  (primer sum_of_squares)",
        "├─ state: fresh",
        "├─ deadlines",
        "├─ dependencies: 3",
        "│  ├─ square/1  fresh, v",
        "(read as it is)",
        "└─ next read: served as it is",
    ] {
        assert!(stdout.contains(expected), "`{expected}` in:\n{stdout}");
    }

    // Invalidated, it and what read it are stale; the next read serves it
    // and queues a refresh, which `jobs` and `status` show.
    let (stdout, _) = run(db(), &["invalidate", "square/2"], 0);
    assert_eq!(
        stdout.trim(),
        "marked 2 products stale: square/2 and what read it"
    );
    let (stdout, _) = run(db(), &["explain", "sum_of_squares/3"], 0);
    assert!(stdout.contains("├─ state: stale since"), "{stdout}");
    assert!(
        stdout.contains("(changed since it was read)") || stdout.contains("stale, v"),
        "{stdout}"
    );
    assert!(
        stdout.contains("└─ next read: served, and a refresh is queued"),
        "{stdout}"
    );
    run(db(), &["get", "sum_of_squares/3"], 0);
    let (stdout, _) = run(db(), &["--json", "jobs", "--pending"], 0);
    let jobs = json(&stdout);
    assert_eq!(jobs["pending"][0]["key"], "sum_of_squares/3", "{jobs}");
    let (stdout, _) = run(db(), &["explain", "sum_of_squares/3"], 0);
    assert!(
        stdout.contains("a refresh is already queued (job"),
        "{stdout}"
    );
    let (stdout, _) = run(db(), &["status"], 0);
    let row = stdout
        .lines()
        .find(|line| line.trim_start().starts_with("sum_of_squares"))
        .unwrap_or_else(|| panic!("a row for sum_of_squares: {stdout}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    // PRIMER FRESH STALE EXPIRED FAILING COMPUTING PENDING …
    assert_eq!(&cells[1..7], ["0", "1", "0", "0", "0", "1"], "{stdout}");
    let (stdout, _) = run(db(), &["--json", "status"], 0);
    let status = json(&stdout);
    assert_eq!(status["jobs"]["pending"], 1, "{status}");

    // A refresh computes now.
    let (stdout, _) = run(db(), &["refresh", "sum_of_squares/3"], 0);
    assert!(
        stdout.starts_with("refreshed sum_of_squares/3: v"),
        "{stdout}"
    );
    let (stdout, _) = run(db(), &["explain", "sum_of_squares/3"], 0);
    assert!(stdout.contains("├─ state: fresh"), "{stdout}");

    // Warm a domain: twenty squares, some already there.
    let (stdout, _) = run(db(), &["warm", "--primer", "square"], 0);
    assert!(stdout.starts_with("warmed square: 20 keys, "), "{stdout}");
    let (stdout, _) = run(db(), &["--json", "refresh", "--primer", "square"], 0);
    let summary = json(&stdout);
    assert_eq!(
        (summary["keys"].clone(), summary["computed"].clone()),
        (20.into(), 20.into())
    );

    // A failing refresh: exit 4, the error on the product.
    run(db(), &["get", "half/2"], 0);
    run(db(), &["remove", "half/2"], 0);
    let (_, stderr) = run(db(), &["remove", "half/2"], 1);
    assert_eq!(stderr.trim(), "error: no product half/2 is stored");
    let (_, stderr) = run(db(), &["invalidate", "half/2"], 1);
    assert_eq!(stderr.trim(), "error: no product half/2 is stored");
    let (_, stderr) = run(db(), &["retry", "424242"], 1);
    assert_eq!(stderr.trim(), "error: no failed job 424242");
    let (stdout, _) = run(db(), &["retry", "--all-failed"], 0);
    assert_eq!(
        stdout.trim(),
        "put 0 failed jobs back in the queue, due now"
    );

    // Dump, and load into another database.
    let dir = std::env::temp_dir().join(format!("kck-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let file = dir.join("cache.jsonl");
    let file_arg = file.to_str().expect("UTF-8 path");
    let (stdout, _) = run(db(), &["dump", file_arg], 0);
    assert!(stdout.starts_with("dumped 22 entries to "), "{stdout}");
    assert!(!dir.join("cache.jsonl.partial").exists());
    let Some(other) = TestDatabase::create().await else {
        return;
    };
    let (stdout, stderr) = run(on(&other), &["load", file_arg], 0);
    assert!(stderr.contains("22 entries, checked; loading"), "{stderr}");
    assert!(stdout.contains("22 written, 0 kept"), "{stdout}");
    let (stdout, _) = run(on(&other), &["get", "--cached", "sum_of_squares/3"], 0);
    assert_eq!(stdout.trim(), "14");
    let (stdout, _) = run(on(&other), &["--json", "load", file_arg], 0);
    assert_eq!(json(&stdout)["kept"], 22);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads `child`'s standard output line by line until one contains
/// `wanted`; returns what was read.
fn read_until(lines: &mut impl Iterator<Item = std::io::Result<String>>, wanted: &str) -> String {
    let mut read = String::new();
    for line in lines {
        let line = line.expect("readable");
        read.push_str(&line);
        read.push('\n');
        if line.contains(wanted) {
            return read;
        }
    }
    panic!("`{wanted}` never came: {read}");
}

fn signal(child: &Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Polls `jobs --json` until `check` holds of it.
fn until_jobs(database: &TestDatabase, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (stdout, _) = run(on(database), &["--json", "jobs"], 0);
        let jobs = json(&stdout);
        if check(&jobs) {
            return jobs;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: {jobs}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A stale product of `slow/{ms}`, and its refresh job queued.
fn queue_a_slow_job(database: &TestDatabase, key: &str) {
    run(on(database), &["get", key], 0);
    run(on(database), &["invalidate", key], 0);
    run(on(database), &["get", key], 0);
    until_jobs(database, "a pending job", |jobs| {
        jobs["pending"][0]["key"] == key
    });
}

/// SIGTERM to a worker that runs a job: the job finishes (within the
/// grace period), the worker says so and exits 0; with a grace period too
/// short, the job goes back to the queue for the next worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stops_gracefully_on_sigterm() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    for (key, grace, finishes) in [("slow/1500", "30s", true), ("slow/3000", "200ms", false)] {
        queue_a_slow_job(&database, key);
        let mut worker = std::process::Command::new(DEMO)
            .env("KCK_DATABASE_URL", database.url())
            .args(["worker", "--grace", grace, "--no-scheduler"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the worker starts");
        let stdout = worker.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        read_until(&mut lines, "jobs at once");
        until_jobs(&database, "the job running", |jobs| {
            jobs["running"][0]["key"] == key
        });
        signal(&worker, "TERM");
        let said = read_until(&mut lines, "stopped");
        assert!(said.contains("stopping: running jobs have"), "{said}");
        let status = worker.wait().expect("the worker ends");
        let mut stderr = String::new();
        if let Some(mut pipe) = worker.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        assert_eq!(status.code(), Some(0), "{stderr}");
        let jobs = until_jobs(&database, "settled", |jobs| {
            jobs["running"] == Value::Array(vec![])
        });
        if finishes {
            assert_eq!(jobs["pending"], Value::Array(vec![]), "done: {jobs}");
            let (stdout, _) = run(on(&database), &["explain", key], 0);
            assert!(stdout.contains("├─ state: fresh"), "refreshed: {stdout}");
        } else {
            assert_eq!(jobs["pending"][0]["key"], key, "given back: {jobs}");
            assert_eq!(jobs["pending"][0]["attempts"], 0, "not counted: {jobs}");
            run(on(&database), &["remove", key], 0);
            until_jobs(&database, "cleared", |_| true);
        }
    }
}

/// Ctrl-C during a load stops it between two entries with exit code 130
/// and says how to go on; loading again finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_interrupted_by_ctrl_c_goes_on_when_run_again() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    const ENTRIES: u64 = 20_000;
    let dir = std::env::temp_dir().join(format!("kck-cli-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let file = dir.join("big.jsonl");
    let mut text = String::from("{\"kck_dump\":1,\"created_at_us\":0}\n");
    for n in 1..=ENTRIES {
        text.push_str(&format!(
            "{{\"key\":\"square/{n}\",\"version\":{n},\"value\":{},\"meta\":{{\"computed_at_us\":0,\
             \"changed_at_us\":0,\"stale_at_us\":null,\"refresh_at_us\":null,\"expires_at_us\":null,\
             \"content_hash\":\"{:032x}\",\"code_version\":\"old\",\"compute_us\":1,\
             \"last_error\":null,\"read_at_us\":null}},\"dependencies\":[]}}\n",
            n * n,
            n
        ));
    }
    text.push_str(&format!("{{\"end\":{{\"entries\":{ENTRIES}}}}}\n"));
    std::fs::write(&file, text).expect("writable");
    let file_arg = file.to_str().expect("UTF-8 path");

    let mut load = std::process::Command::new(DEMO)
        .env("KCK_DATABASE_URL", database.url())
        .args(["load", file_arg])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("load starts");
    let stderr = load.stderr.take().expect("piped");
    let mut lines = BufReader::new(stderr).lines();
    read_until(&mut lines, "checked; loading");
    signal(&load, "INT");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = load.wait().expect("load ends");
    assert_eq!(status.code(), Some(130), "{rest:?}");
    let said = rest.join("\n");
    assert!(said.contains("error: interrupted: "), "{said}");
    assert!(said.contains("run `load` again to go on"), "{said}");

    let (stdout, _) = run(on(&database), &["--json", "load", file_arg], 0);
    let report = json(&stdout);
    assert_eq!(report["entries"], ENTRIES);
    assert_eq!(
        report["written"].as_u64().unwrap_or(0) + report["kept"].as_u64().unwrap_or(0),
        ENTRIES,
        "{report}"
    );
    let (stdout, _) = run(on(&database), &["--json", "status"], 0);
    let status = json(&stdout);
    let square = status["primers"]
        .as_array()
        .and_then(|primers| primers.iter().find(|p| p["name"] == "square"))
        .unwrap_or_else(|| panic!("square in {status}"));
    assert_eq!(square["total"], ENTRIES, "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `dump -` into a pipe whose reader went away (as `| head` does) stops
/// quietly: the reader has what it wanted.
#[test]
fn a_dump_into_a_closed_pipe_stops_quietly() {
    let mut dump = std::process::Command::new(DEMO)
        .args(["--memory", "dump", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the demo starts");
    // Closed before the process is far enough along to write.
    drop(dump.stdout.take());
    let output = dump.wait_with_output().expect("the demo ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
}
