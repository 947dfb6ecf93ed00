//! BuildKit's parser test `result` dump format.

use crate::ast::{Args, Instruction, InstructionKind};
use crate::quote::go_quote;

/// Formats an instruction as one line of BuildKit's parser test `result` files:
/// `(name ["--flag" ...] "arg" ...)` with Go-style quoted strings; ONBUILD nests its trigger;
/// ENV/LABEL give key, value, separator (`"="` or `""` for the legacy form) triples.
pub fn dump(inst: &Instruction) -> String {
    format!("({})", dump_inner(inst))
}

fn dump_inner(inst: &Instruction) -> String {
    let mut s = inst.name_original.to_lowercase();
    if !inst.flags.is_empty() {
        let words: Vec<String> = inst.flags.iter().map(|f| go_quote(&f.to_word())).collect();
        s.push_str(&format!(" [{}]", words.join(" ")));
    }
    if let Some(t) = &inst.onbuild {
        s.push_str(&format!(" ({})", dump_inner(t)));
        return s;
    }
    if inst.kind != InstructionKind::Onbuild {
        dump_args(&mut s, inst.kind, &inst.args);
    }
    s.trim().to_string()
}

fn dump_args(s: &mut String, kind: InstructionKind, args: &Args) {
    let mut push = |v: &str| {
        s.push(' ');
        s.push_str(&go_quote(v));
    };
    match args {
        Args::Empty => {}
        Args::Exec(v) | Args::Words(v) => v.iter().for_each(|w| push(w)),
        Args::Shell(t) | Args::Single(t) => push(t),
        Args::KeyValues(kvs) => {
            for kv in kvs {
                if kind == InstructionKind::Arg {
                    match &kv.value {
                        Some(v) => push(&format!("{}={}", kv.key, v)),
                        None => push(&kv.key),
                    }
                } else {
                    push(&kv.key);
                    push(kv.value.as_deref().unwrap_or(""));
                    push(if kv.legacy { "" } else { "=" });
                }
            }
        }
        Args::Healthcheck {
            check_type,
            command,
        } => {
            push(check_type);
            dump_args(s, kind, command);
        }
    }
}
