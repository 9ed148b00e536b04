//! Writes a benchmark's results into its section of `BENCHMARKS.md`, with
//! the machine, the date and the command, replacing the previous run's.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

/// Replaces the section `name` of `BENCHMARKS.md` (at the workspace root)
/// with `body`; returns the file's path.
pub(crate) fn record(name: &str, command: &str, body: &str) -> std::io::Result<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
    let current = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let (begin, end) = (
        format!("<!-- BEGIN {name} -->"),
        format!("<!-- END {name} -->"),
    );
    let mut section = String::new();
    let _ = writeln!(section, "{begin}");
    let _ = writeln!(section, "Command: `{command}`\n");
    let _ = writeln!(section, "Machine: {}\n", machine());
    let _ = writeln!(section, "{body}");
    let _ = write!(section, "{end}");
    let updated = match (current.find(&begin), current.find(&end)) {
        (Some(start), Some(stop)) if start < stop => {
            format!(
                "{}{section}{}",
                &current[..start],
                &current[stop + end.len()..]
            )
        }
        _ => format!("{}\n{section}\n", current.trim_end()),
    };
    std::fs::write(&path, updated)?;
    Ok(path)
}

/// CPU, cores, compiler and date.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|model| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|version| version.trim().to_owned())
        .unwrap_or_else(|| "rustc (unknown version)".to_owned());
    let now = kck_core::clock::Timestamp::from_system_time(std::time::SystemTime::now());
    let date = now.to_string().chars().take(10).collect::<String>();
    format!("{cpu}, {cores} cores, {rustc}, {date}")
}
