//! The one `key=value,...` reader behind every spec flag (`--output`, `--secret`, `--cache-to`,
//! `--cache-from`): fields are comma-separated as in a CSV record (buildx reads these flags with
//! Go's `encoding/csv`), so a field in double quotes may hold commas (`"name=a,b"`) and `""`
//! stands for one quote inside it. Each field splits at its first `=`. The reader is
//! [`rbuild_llb::csv`], shared with `RUN --mount` (its tests live there).

pub use rbuild_llb::csv::{fields, CsvError as KvError, Field};
