//! The `key=value,...` record syntax of BuildKit and buildx flag values (`RUN --mount=...`,
//! `--output`, `--secret`, `--cache-to`, `--cache-from`), which they read as one CSV record
//! (Go's `encoding/csv`, BuildKit's `go-csvvalue`): fields are comma-separated, a field that
//! starts with a double quote may hold commas and `""` stands for one quote inside it; a quote
//! elsewhere is an ordinary character. Each field splits at its first `=`.

/// One field of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field as written (quotes removed).
    pub raw: String,
    /// The text before the first `=` (the whole field when it has none).
    pub key: String,
    /// The text after the first `=`, if there is one.
    pub value: Option<String>,
}

/// Why a record could not be split into fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// A field that opens a quote never closes it.
    #[error("unterminated quoted field `{0}`")]
    Unterminated(String),
    /// Text follows a quoted field's closing quote.
    #[error("extraneous text after the quoted field `{0}`")]
    AfterQuote(String),
}

/// Splits `record` into its fields. An empty record is one empty field (as a CSV line is).
pub fn fields(record: &str) -> Result<Vec<Field>, CsvError> {
    let mut out = Vec::new();
    let mut chars = record.chars().peekable();
    loop {
        let mut raw = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        raw.push('"');
                    }
                    Some('"') => break,
                    Some(c) => raw.push(c),
                    None => return Err(CsvError::Unterminated(raw)),
                }
            }
            match chars.next() {
                None => {
                    out.push(Field::new(raw));
                    return Ok(out);
                }
                Some(',') => out.push(Field::new(raw)),
                Some(_) => return Err(CsvError::AfterQuote(raw)),
            }
            continue;
        }
        loop {
            match chars.next() {
                None => {
                    out.push(Field::new(raw));
                    return Ok(out);
                }
                Some(',') => break,
                Some(c) => raw.push(c),
            }
        }
        out.push(Field::new(raw));
    }
}

impl Field {
    /// A field from its unquoted text, split at its first `=`.
    fn new(raw: String) -> Field {
        let (key, value) = match raw.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (raw.clone(), None),
        };
        Field { raw, key, value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(record: &str) -> Vec<(String, Option<String>)> {
        fields(record)
            .unwrap()
            .into_iter()
            .map(|f| (f.key, f.value))
            .collect()
    }

    #[test]
    fn splits_at_commas_and_the_first_equals() {
        assert_eq!(
            kv("type=local,dest=/a=b,bare"),
            vec![
                ("type".into(), Some("local".into())),
                ("dest".into(), Some("/a=b".into())),
                ("bare".into(), None),
            ]
        );
        assert_eq!(kv(""), vec![(String::new(), None)]);
        assert_eq!(
            kv("a=1,"),
            vec![("a".into(), Some("1".into())), (String::new(), None)]
        );
    }

    #[test]
    fn quoted_fields_hold_commas_and_quotes() {
        assert_eq!(
            kv(r#"type=image,"name=a:1,b:2",x="y""#),
            vec![
                ("type".into(), Some("image".into())),
                ("name".into(), Some("a:1,b:2".into())),
                ("x".into(), Some("\"y\"".into())),
            ]
        );
        assert_eq!(
            kv(r#""a=say ""hi""""#),
            vec![("a".into(), Some("say \"hi\"".into()))]
        );
        assert_eq!(fields(r#""a,b",c"#).unwrap()[0].raw, "a,b");
    }

    #[test]
    fn bad_quotes_are_errors() {
        assert_eq!(
            fields(r#"type=oci,"dest=/x"#).unwrap_err().to_string(),
            "unterminated quoted field `dest=/x`"
        );
        assert_eq!(
            fields(r#""a=1"b,c=2"#).unwrap_err().to_string(),
            "extraneous text after the quoted field `a=1`"
        );
    }
}
