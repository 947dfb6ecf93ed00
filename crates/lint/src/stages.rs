//! The Dockerfile cut into global instructions and stages, the shape both rule sets walk.

use rbuild_frontend::{Args, Dockerfile, Instruction, InstructionKind};

/// One `FROM` and the instructions up to the next.
pub(crate) struct Stage<'a> {
    /// The `FROM` instruction.
    pub(crate) from: &'a Instruction,
    /// The image word as written (`busybox:${TAG}`), empty when missing.
    pub(crate) base: String,
    /// The `AS` keyword as written and the name as written, when present.
    pub(crate) alias: Option<(String, String)>,
    /// The instructions after the `FROM`.
    pub(crate) body: Vec<&'a Instruction>,
}

impl Stage<'_> {
    /// The stage name, lowercased as BuildKit resolves it.
    pub(crate) fn name(&self) -> Option<String> {
        self.alias.as_ref().map(|(_, n)| n.to_lowercase())
    }
}

/// The global `ARG`s and the stages.
pub(crate) struct Model<'a> {
    /// Instructions before the first `FROM` (ARGs).
    pub(crate) globals: Vec<&'a Instruction>,
    /// The stages in order.
    pub(crate) stages: Vec<Stage<'a>>,
}

impl<'a> Model<'a> {
    pub(crate) fn new(df: &'a Dockerfile) -> Model<'a> {
        let mut globals = Vec::new();
        let mut stages: Vec<Stage<'a>> = Vec::new();
        for ins in &df.instructions {
            if ins.kind == InstructionKind::From {
                let words = words(ins);
                let alias = (words.len() == 3 && words[1].eq_ignore_ascii_case("as"))
                    .then(|| (words[1].clone(), words[2].clone()));
                stages.push(Stage {
                    from: ins,
                    base: words.first().cloned().unwrap_or_default(),
                    alias,
                    body: Vec::new(),
                });
            } else if let Some(stage) = stages.last_mut() {
                stage.body.push(ins);
            } else {
                globals.push(ins);
            }
        }
        Model { globals, stages }
    }

    /// The index of an earlier stage named `name` (case-insensitively), as FROM resolves it.
    pub(crate) fn stage_before(&self, index: usize, name: &str) -> Option<usize> {
        let name = name.to_lowercase();
        self.stages[..index]
            .iter()
            .rposition(|s| s.name().as_deref() == Some(name.as_str()))
    }
}

/// The words of a `Words` argument list (FROM, EXPOSE, COPY, ...); empty otherwise.
pub(crate) fn words(ins: &Instruction) -> Vec<String> {
    match &ins.args {
        Args::Words(w) => w.clone(),
        Args::Exec(w) => w.clone(),
        Args::Single(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// The flag's value, when the instruction carries `--name=value`.
pub(crate) fn flag<'i>(ins: &'i Instruction, name: &str) -> Option<&'i str> {
    ins.flags
        .iter()
        .find(|f| f.name == name)
        .and_then(|f| f.value.as_deref())
}
