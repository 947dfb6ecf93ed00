//! The one `key=value,...` reader behind every spec flag (`--output`, `--secret`, `--cache-to`,
//! `--cache-from`): fields are comma-separated as in a CSV record (buildx reads these flags with
//! Go's `encoding/csv`), so a field in double quotes may hold commas (`"name=a,b"`) and `""`
//! stands for one quote inside it. Each field splits at its first `=`. The reader is
//! [`rbuild_llb::csv`], shared with `RUN --mount`.

pub use rbuild_llb::csv::{fields, CsvError as KvError, Field};

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(spec: &str) -> Vec<(String, Option<String>)> {
        fields(spec)
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
