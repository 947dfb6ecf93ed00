//! Parse errors that point at the Dockerfile line and column.

/// A syntax error in a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// What is wrong.
    pub message: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// The text of that line.
    pub line_text: String,
}

impl ParseError {
    /// `FILE:LINE:COL: message`, then the line, then a caret under the column.
    pub fn render(&self, file_name: &str) -> String {
        let caret_pad: String = self.line_text.chars().take(self.col.saturating_sub(1)).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
        format!("{file_name}:{}:{}: {}\n{}\n{}^", self.line, self.col, self.message, self.line_text, caret_pad)
    }
}

/// An error of variable expansion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExpandError(pub String);
