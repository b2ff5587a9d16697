//! Experiment reports: what a run measured, written as standalone files to look at afterwards.

pub mod svg;

/// A Markdown table with one column per run: `corner` heads the row names, `columns` the runs, and each
/// row is a name and one value per run.
pub fn markdown_table(corner: &str, columns: &[String], rows: &[(String, Vec<String>)]) -> String {
    let mut out = format!("| {corner} |");
    for column in columns {
        out.push_str(&format!(" {column} |"));
    }
    out.push_str("\n|---|");
    for _ in columns {
        out.push_str("---|");
    }
    for (name, values) in rows {
        out.push_str(&format!("\n| {name} |"));
        for value in values {
            out.push_str(&format!(" {value} |"));
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_markdown_table_has_a_column_per_run() {
        let rows = vec![(
            "answered".to_owned(),
            vec!["100 %".to_owned(), "5 %".to_owned()],
        )];
        assert_eq!(
            super::markdown_table("", &["auto".into(), "off".into()], &rows),
            "|  | auto | off |\n|---|---|---|\n| answered | 100 % | 5 % |\n"
        );
    }
}
