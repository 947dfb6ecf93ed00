//! The first phase of a build: the `-t`/`--output` names checked, the context and the Dockerfile
//! read (the `[internal] load build definition` vertex) and parsed, and the parsed input with
//! the helpers its diagnostics need ([`Loaded`]).

use crate::error::{blocking, BuildError, DockerfileError, DockerfileText};
use crate::input::{self, BuildInput};
use crate::progress::{BuildEvent, Progress};
use crate::request::{ContextSource, DockerfileSource};
use crate::spec::{Output, OutputSpec};
use crate::state::StateDir;
use crate::vertices::InternalVertex;
use rbuild_frontend::Dockerfile;

/// Checks the `-t` names and the outputs' `name=`s against the docker reference grammar, before
/// anything runs (the CLI already checked them; an embedder may set them directly).
pub(crate) fn check_names(tags: &[String], outputs: &[OutputSpec]) -> Result<(), BuildError> {
    for tag in tags {
        crate::spec::check_reference("-t, --tag", tag)?;
    }
    for o in outputs {
        if let Output::Oci { names, .. }
        | Output::Docker { names, .. }
        | Output::Image { names, .. } = &o.output
        {
            for name in names {
                crate::spec::check_reference("-o, --output", name)?;
            }
        }
    }
    Ok(())
}

/// The inputs of a build and its parsed Dockerfile.
pub(crate) struct Loaded {
    /// The context, the Dockerfile and how they were given.
    pub(crate) input: BuildInput,
    /// The parsed Dockerfile.
    pub(crate) ast: Dockerfile,
}

impl Loaded {
    /// The Dockerfile's name and text, as its diagnostics need them.
    pub(crate) fn text(&self) -> DockerfileText {
        DockerfileText {
            name: self.input.dockerfile_name.clone(),
            source: self.input.source.clone(),
        }
    }

    /// A conversion error of this Dockerfile, its span widened to the whole instruction it
    /// points into (BuildKit marks every line of a continued instruction).
    pub(crate) fn convert_error(&self, mut error: rbuild_frontend::ConvertError) -> BuildError {
        if let Some(span) = &mut error.span {
            let line = span.start_line;
            let inst = (self.ast.instructions.iter())
                .find(|i| i.span.start_line <= line && line <= i.span.end_line);
            if let Some(inst) = inst {
                span.start_line = inst.span.start_line;
                span.end_line = span.end_line.max(inst.span.end_line);
            }
        }
        BuildError::Dockerfile(Box::new(DockerfileError::Convert {
            error,
            file: self.text(),
        }))
    }
}

/// Reads the context and the Dockerfile and parses it.
pub(crate) async fn load(
    state: &StateDir,
    context: ContextSource,
    dockerfile: DockerfileSource,
    progress: &dyn Progress,
) -> Result<Loaded, BuildError> {
    let sink = progress.solver_sink();
    let vertex = InternalVertex::start(&sink, "[internal] load build definition from Dockerfile");
    let input = {
        let state = state.clone();
        blocking(move || input::prepare(context, dockerfile, &state)).await
    };
    let input = match input {
        Ok(input) => {
            vertex.log(format!(
                "transferring dockerfile: {}B done",
                input.source.len()
            ));
            vertex.done();
            input
        }
        Err(e) => {
            vertex.fail(e.to_string());
            return Err(e);
        }
    };
    let ast = rbuild_frontend::parse(&input.source).map_err(|error| {
        BuildError::Dockerfile(Box::new(DockerfileError::Parse {
            error,
            file: DockerfileText {
                name: input.dockerfile_name.clone(),
                source: input.source.clone(),
            },
        }))
    })?;
    if let Some(syntax) = &ast.directives.syntax {
        if !input::is_builtin_syntax(syntax) {
            progress.event(BuildEvent::SyntaxIgnored {
                file: input.dockerfile_name.clone(),
                syntax: syntax.clone(),
            });
        }
    }
    Ok(Loaded { input, ast })
}
