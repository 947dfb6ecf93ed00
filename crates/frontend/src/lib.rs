//! Dockerfile frontend: pest grammar, spanned AST, variable expansion and conversion to the llb graph.
//!
//! This crate owns everything between Dockerfile text and the build graph:
//! - [`parse`]: the BuildKit-compatible Dockerfile parser (pest grammar in `dockerfile.pest` plus
//!   a physical-line pre-pass for directives, comments, continuations and heredocs), producing
//!   the spanned [`Dockerfile`] syntax tree; [`dump`] prints an instruction in BuildKit's parser
//!   test format.
//! - [`expand`]: BuildKit's shell-word lexer (`$VAR`, `${VAR:-x}`, quotes, escapes, ...).
//! - [`instructions`]: one typed command per instruction (`RunCmd`, `CopyCmd`, `EnvCmd`, ...)
//!   whose flags are checked against the flags each instruction takes (BuildKit's `bflag` rules)
//!   and whose arguments are read and validated there (BuildKit's `instructions` package).
//! - [`base_images`] and [`convert`](fn@convert): the stages the target needs become an llb
//!   graph and the image config, following BuildKit's dockerfile2llb; [`convert_multi`] does it
//!   for several target platforms into one graph (`--platform a,b`), with `FROM --platform` and
//!   the automatic platform ARGs.
//! - errors: [`ParseError`] (rendered with a source line and caret) and [`ExpandError`].
//!
//! The frontend is pure and synchronous: it reads only the text handed to it.

pub mod ast;
mod convert;
pub mod error;
pub mod expand;
pub mod instructions;
pub mod parser;
mod quote;

pub use ast::{
    Args, Directives, Dockerfile, Flag, Heredoc, Instruction, InstructionKind, KeyValue, Span,
    EXPANDING_INSTRUCTIONS,
};
pub use convert::{
    base_image_sites, base_image_sites_multi, base_images, convert, convert_multi,
    named_source_name, stage_names, BaseImage, Bases, BuildPlan, ConvertError, ConvertOptions,
    NamedContext, PlatformPlan,
};
pub use error::{ExpandError, ParseError, ParseErrorKind};
pub use expand::{process_word, process_words, Lexer};
pub use parser::{dump, parse};
