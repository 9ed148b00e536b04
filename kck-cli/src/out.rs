//! How commands print: tables and sentences for people, JSON for scripts.

use std::io::Write as _;

use comfy_table::{Table, presets};
use kck_core::clock::Timestamp;
use serde::Serialize;

use crate::CliError;

/// Standard output, in the format the options chose.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out {
    json: bool,
}

impl Out {
    pub(crate) fn new(json: bool) -> Self {
        Out { json }
    }

    /// Whether scripts are reading: print [`Out::json`], not tables.
    pub(crate) fn is_json(self) -> bool {
        self.json
    }

    /// One JSON document, pretty-printed.
    pub(crate) fn json(self, value: &impl Serialize) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|error| CliError::Failed(format!("cannot print JSON: {error}")))?;
        self.text(&text)
    }

    /// A table with a header row, columns aligned, no borders.
    pub(crate) fn table(self, header: &[&str], rows: Vec<Vec<String>>) -> Result<(), CliError> {
        let mut table = Table::new();
        table
            .load_style(presets::NOTHING)
            .set_header(header.to_vec());
        for row in rows {
            table.add_row(row);
        }
        self.text(&table.to_string())
    }

    /// Text, and a line end.
    pub(crate) fn text(self, text: &str) -> Result<(), CliError> {
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (`kck jobs | head`) is not this command's failure.
        match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
            Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
            _ => Ok(()),
        }
    }
}

/// `at` as people read it: the time, and how long ago or from now.
pub(crate) fn when(at: Timestamp, now: Timestamp) -> String {
    let at_text = at.to_string();
    let shown = at_text.get(..19).unwrap_or(&at_text).replace('T', " ");
    if at <= now {
        format!("{shown} ({} ago)", span(now.saturating_duration_since(at)))
    } else {
        format!("{shown} (in {})", span(at.saturating_duration_since(now)))
    }
}

/// A duration as people read it, to the second (or millisecond, under a
/// second): `3h 12m`, `45s`, `120ms`.
pub(crate) fn span(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    if secs == 0 {
        return format!("{}ms", duration.as_millis());
    }
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m {seconds}s"),
        (0, _, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn spans_read_as_people_say_them() {
        assert_eq!(span(Duration::from_millis(120)), "120ms");
        assert_eq!(span(Duration::from_secs(45)), "45s");
        assert_eq!(span(Duration::from_secs(125)), "2m 5s");
        assert_eq!(span(Duration::from_secs(3 * 3600 + 12 * 60 + 5)), "3h 12m");
        assert_eq!(span(Duration::from_secs(2 * 86_400 + 3600)), "2d 1h");
    }

    #[test]
    fn times_say_how_far_they_are() {
        let now = Timestamp::from_unix_micros(1_795_000_000_000_000);
        assert_eq!(
            when(now - Duration::from_secs(90), now),
            "2026-11-18 11:05:10 (1m 30s ago)"
        );
        assert_eq!(
            when(now + Duration::from_secs(5), now),
            "2026-11-18 11:06:45 (in 5s)"
        );
    }
}
