//! The one way a command shows its answer: the answer is a value that is [`Render`], and
//! [`Output::show`] prints it as pretty JSON with `--json`, or in its human form otherwise.
//!
//! The human form is written to a [`Text`]: aligned tables and label/value pairs on stdout, and
//! notes (warnings, hints) on stderr. A list ([`api::List`]) of a [`Row`] type is one table.
//! Where a command shows a wire type in a form of its own (a withdrawn offer, a cancelled job), a
//! small wrapper that serialises as the wire type (`#[serde(transparent)]`) carries that form.

use std::io::Write as _;

use anyhow::Context as _;
use serde::Serialize;
use suanli_api as api;

use super::format::{render_pairs, render_table};
use super::Result;

/// A command's answer: serialised as it is for `--json`, written for people by [`Render::render`].
pub(super) trait Render: Serialize {
    /// Writes the human form.
    fn render(&self, text: &mut Text);
}

/// A type shown as one row of a table: an [`api::List`] of it renders as that table.
pub(super) trait Row {
    /// The table's column names.
    const HEADER: &'static [&'static str];

    /// The cells of this row, one per column.
    fn row(&self) -> Vec<String>;
}

impl<T: Row + Serialize> Render for api::List<T> {
    fn render(&self, text: &mut Text) {
        let rows: Vec<Vec<String>> = self.items.iter().map(Row::row).collect();
        text.table(T::HEADER, &rows);
    }
}

/// Text for people: what goes to stdout, and notes for stderr.
#[derive(Debug, Default)]
pub(super) struct Text {
    pub(super) out: String,
    pub(super) err: String,
}

impl Text {
    pub(super) fn table(&mut self, header: &[&str], rows: &[Vec<String>]) {
        self.out.push_str(&render_table(header, rows));
    }

    pub(super) fn pairs(&mut self, pairs: &[(&str, String)]) {
        self.out.push_str(&render_pairs(pairs));
    }

    pub(super) fn line(&mut self, line: &str) {
        self.out.push_str(line);
        self.out.push('\n');
    }

    pub(super) fn note(&mut self, line: &str) {
        self.err.push_str(line);
        self.err.push('\n');
    }
}

/// What a command prints: stdout, then notes on stderr; JSON or text, as `--json` says.
#[derive(Debug)]
pub(super) struct Output {
    json: bool,
    text: Text,
}

impl Output {
    pub(super) fn new(json: bool) -> Output {
        Output {
            json,
            text: Text::default(),
        }
    }

    /// Whether `--json` was asked: stdout holds JSON only.
    pub(super) fn is_json(&self) -> bool {
        self.json
    }

    /// Shows a command's answer: pretty JSON with `--json`, else its human form.
    pub(super) fn show<T: Render + ?Sized>(&mut self, value: &T) -> Result {
        if self.json {
            self.text.line(&serde_json::to_string_pretty(value)?);
        } else {
            value.render(&mut self.text);
        }
        Ok(())
    }

    /// A line on stdout, with or without `--json`.
    pub(super) fn line(&mut self, line: &str) {
        self.text.line(line);
    }

    /// A note on stderr, with or without `--json`.
    pub(super) fn note(&mut self, line: &str) {
        self.text.note(line);
    }

    /// Text that people read on stdout, and that goes to stderr with `--json` to keep stdout
    /// JSON.
    pub(super) fn aside(&mut self, text: &str) {
        if self.json {
            self.text.err.push_str(text);
        } else {
            self.text.out.push_str(text);
        }
    }

    /// Writes what is pending now, before a command streams output of its own.
    pub(super) fn flush(&mut self) -> Result {
        self.emit()?;
        self.text.out.clear();
        self.text.err.clear();
        Ok(())
    }

    /// Writes stdout then stderr; a closed stdout (`| head`) is not an error.
    pub(super) fn emit(&self) -> Result {
        let mut stdout = std::io::stdout().lock();
        match stdout
            .write_all(self.text.out.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(e).context("cannot write to stdout")
            }
            _ => {}
        }
        let _ = std::io::stderr().write_all(self.text.err.as_bytes());
        Ok(())
    }
}
