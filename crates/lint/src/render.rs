//! Renderings of a [`Report`]: BuildKit's `--check` text (warnings with Dockerfile excerpts),
//! BuildKit's lint JSON (`--format json`), SARIF 2.1.0 for code scanning, and the
//! `N warnings found` list a build prints at its end.

use crate::{Finding, Report};
use base64::Engine as _;
use serde_json::{json, Value};

/// BuildKit's excerpt of the lines `start..=end` (1-based): two lines of context around a
/// one-line range, one around a longer one, the range marked `>>>`.
pub fn excerpt(file_name: &str, source: &str, start: usize, end: usize) -> String {
    let lines: Vec<&str> = source.split('\n').collect();
    if start < 1 || start > lines.len() {
        return String::new();
    }
    let (mark_start, mark_end) = (start, end.min(lines.len()));
    let (mut from, mut to) = (mark_start, mark_end);
    let pad = if from == to { 4 } else { 2 };
    let mut p = 0;
    while p < pad {
        if from > 1 {
            from -= 1;
            p += 1;
        }
        if to != lines.len() {
            to += 1;
            p += 1;
        }
        p += 1;
    }
    let mut out = format!("{file_name}:{mark_start}\n--------------------\n");
    for n in from..=to {
        let marker = if (mark_start..=mark_end).contains(&n) {
            ">>>"
        } else {
            "   "
        };
        out.push_str(&format!(" {n:>3} | {marker} {}\n", lines[n - 1]));
    }
    out.push_str("--------------------\n");
    out
}

/// `rbuild check`'s text, as `docker build --check` prints it: the count line, then per
/// finding `WARNING: Rule - URL`, the message and the excerpt; `Check complete, no warnings
/// found.` when there is nothing.
pub fn text(report: &Report) -> String {
    let n = report.findings.len();
    if n == 0 {
        return "Check complete, no warnings found.\n".to_string();
    }
    let mut out = if n == 1 {
        "Check complete, 1 warning has been found!\n".to_string()
    } else {
        format!("Check complete, {n} warnings have been found!\n")
    };
    for f in &report.findings {
        out.push_str(&format!(
            "\nWARNING: {} - {}\n{}\n",
            f.rule.id, f.rule.url, f.message
        ));
        out.push_str(&excerpt(
            &report.file_name,
            &report.source,
            f.span.start_line,
            f.span.end_line,
        ));
    }
    out
}

/// BuildKit's one-line form of a finding: `Rule: message (line N)`.
pub fn short(f: &Finding) -> String {
    format!("{}: {} (line {})", f.rule.id, f.message, f.span.start_line)
}

/// The list a build prints at its end: ` N warnings found (use --debug to expand):` and
/// ` - Rule: message (line N)` per finding; with `expand`, each with its description, URL and
/// excerpt. Empty when there are no findings.
pub fn summary(report: &Report, expand: bool) -> String {
    let n = report.findings.len();
    if n == 0 {
        return String::new();
    }
    let mut out = if n == 1 {
        " 1 warning found".to_string()
    } else {
        format!(" {n} warnings found")
    };
    if !expand {
        out.push_str(" (use --debug to expand)");
    }
    out.push_str(":\n");
    for f in &report.findings {
        out.push_str(&format!(" - {}\n", short(f)));
        if expand {
            out.push_str(&format!(
                "{}\nMore info: {}\n",
                f.rule.description, f.rule.url
            ));
            out.push_str(&excerpt(
                &report.file_name,
                &report.source,
                f.span.start_line,
                f.span.end_line,
            ));
            out.push('\n');
        }
    }
    out
}

fn range(f: &Finding) -> Value {
    json!({
        "start": {"line": f.span.start_line, "character": f.span.start_col.saturating_sub(1)},
        "end": {"line": f.span.end_line, "character": f.span.end_col.saturating_sub(1)},
    })
}

/// One finding as a JSON object of BuildKit's lint result (`ruleName`, `description`, `url`,
/// `detail`, `location`), plus rbuild's `severity`.
pub fn finding_json(f: &Finding) -> Value {
    json!({
        "ruleName": f.rule.id,
        "description": f.rule.description,
        "url": f.rule.url,
        "detail": f.message,
        "severity": f.rule.severity,
        "location": {"sourceIndex": 0, "ranges": [range(f)]},
    })
}

/// BuildKit's lint result JSON (`warnings`, `sources` with the Dockerfile base64-encoded, and
/// `buildError` when `# check=error=true` turns the findings into an error).
pub fn json(report: &Report) -> Value {
    let warnings: Vec<Value> = report.findings.iter().map(finding_json).collect();
    let mut v = json!({
        "warnings": warnings,
        "sources": [{
            "filename": report.file_name,
            "language": "Dockerfile",
            "data": base64::engine::general_purpose::STANDARD.encode(report.source.as_bytes()),
        }],
    });
    if let Some(msg) = report.violation_error() {
        v["buildError"] = json!({"message": msg, "location": {"sourceIndex": 0, "ranges": []}});
    }
    v
}

/// A SARIF 2.1.0 log with one run: the rules that fired and one result per finding.
pub fn sarif(report: &Report) -> Value {
    let mut ids: Vec<&'static crate::Rule> = Vec::new();
    for f in &report.findings {
        if !ids.iter().any(|r| r.id == f.rule.id) {
            ids.push(f.rule);
        }
    }
    let rules: Vec<Value> = ids
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "shortDescription": {"text": r.description},
                "helpUri": r.url,
                "defaultConfiguration": {"level": r.severity.sarif_level()},
            })
        })
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            json!({
                "ruleId": f.rule.id,
                "ruleIndex": ids.iter().position(|r| r.id == f.rule.id).unwrap_or(0),
                "level": f.rule.severity.sarif_level(),
                "message": {"text": f.message},
                "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": report.file_name},
                    "region": {
                        "startLine": f.span.start_line,
                        "startColumn": f.span.start_col.max(1),
                        "endLine": f.span.end_line,
                        "endColumn": f.span.end_col.max(1),
                    },
                }}],
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "rbuild",
                "informationUri": "https://docs.docker.com/reference/build-checks/",
                "rules": rules,
            }},
            "results": results,
        }],
    })
}
