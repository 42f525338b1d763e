//! Rows of JSON objects printed as an aligned table, TSV or JSON, with a
//! choice of columns. A column is a field name of the API's JSON, or a
//! dotted path into a nested object (`message_stats.publish`,
//! `queue.name`).

use std::fmt::Write as _;
use std::io::Write as _;

use clap::ValueEnum;
use serde_json::{Map, Value};

/// How lists are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Columns aligned with spaces, a header line first.
    Table,
    /// A JSON array of objects (the selected columns, or every field when
    /// no column was chosen).
    Json,
    /// Tab-separated values, a header line first; tabs, newlines and
    /// backslashes in values escaped as `\t`, `\n`, `\\`.
    Tsv,
}

/// What to print and how.
#[derive(Debug)]
pub struct Listing<'a> {
    pub format: Format,
    pub columns: Vec<String>,
    /// The user named the columns: JSON prints only them.
    pub columns_chosen: bool,
    pub headers: bool,
    pub rows: &'a [Value],
}

impl Listing<'_> {
    /// The text to print (ends with a newline unless empty).
    pub fn render(&self) -> String {
        match self.format {
            Format::Json => self.json(),
            Format::Tsv => self.separated(),
            Format::Table => self.table(),
        }
    }

    fn json(&self) -> String {
        let rows: Vec<Value> = if self.columns_chosen {
            self.rows
                .iter()
                .map(|row| {
                    let picked: Map<String, Value> = self
                        .columns
                        .iter()
                        .map(|column| (column.clone(), lookup(row, column).cloned().unwrap_or(Value::Null)))
                        .collect();
                    Value::Object(picked)
                })
                .collect()
        } else {
            self.rows.to_vec()
        };
        let mut text = serde_json::to_string_pretty(&Value::Array(rows)).unwrap_or_default();
        text.push('\n');
        text
    }

    fn cells(&self) -> Vec<Vec<String>> {
        self.rows.iter().map(|row| self.columns.iter().map(|c| cell(lookup(row, c))).collect()).collect()
    }

    fn separated(&self) -> String {
        let mut out = String::new();
        let escape = |s: &str| s.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n");
        if self.headers {
            out.push_str(&self.columns.join("\t"));
            out.push('\n');
        }
        for row in self.cells() {
            let escaped: Vec<String> = row.iter().map(|c| escape(c)).collect();
            out.push_str(&escaped.join("\t"));
            out.push('\n');
        }
        out
    }

    fn table(&self) -> String {
        let cells = self.cells();
        let mut widths: Vec<usize> =
            self.columns.iter().map(|c| if self.headers { c.chars().count() } else { 0 }).collect();
        for row in &cells {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |values: &[String]| {
            let mut text = String::new();
            for (i, (value, width)) in values.iter().zip(&widths).enumerate() {
                if i + 1 == values.len() {
                    text.push_str(value);
                } else {
                    let _ = write!(text, "{value:<width$}  ");
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        if self.headers {
            line(&self.columns);
        }
        for row in &cells {
            line(row);
        }
        out
    }
}

/// Writes `text` to stdout; a closed pipe (`lepusctl list queues | head`)
/// is not an error worth a panic.
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// The value at a dotted path, trying the whole name first (field names
/// such as `apply-to` never hold dots, but be exact anyway).
pub fn lookup<'v>(row: &'v Value, column: &str) -> Option<&'v Value> {
    if let Some(value) = row.get(column) {
        return Some(value);
    }
    column.split('.').try_fold(row, |value, key| value.get(key))
}

/// One value as text: strings bare, missing and null empty, the rest JSON.
pub fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn listing(format: Format, rows: &[Value], columns: &[&str]) -> String {
        let columns = columns.iter().map(|c| (*c).to_owned()).collect();
        Listing { format, columns, columns_chosen: true, headers: true, rows }.render()
    }

    #[test]
    fn table_aligns_and_reads_dotted_paths() {
        let rows = [json!({"name": "a", "message_stats": {"publish": 3}}), json!({"name": "long-name"})];
        let text = listing(Format::Table, &rows, &["name", "message_stats.publish"]);
        assert_eq!(text, "name       message_stats.publish\na          3\nlong-name\n");
    }

    #[test]
    fn tsv_escapes_separators() {
        let rows = [json!({"name": "a\tb\nc", "arguments": {"x-max-length": 1}})];
        let text = listing(Format::Tsv, &rows, &["name", "arguments"]);
        assert_eq!(text, "name\targuments\na\\tb\\nc\t{\"x-max-length\":1}\n");
    }

    #[test]
    fn json_keeps_only_chosen_columns() {
        let rows = [json!({"name": "a", "vhost": "/", "messages": 2})];
        let text = listing(Format::Json, &rows, &["name", "missing"]);
        let parsed: Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(parsed, json!([{"name": "a", "missing": null}]));
    }
}
