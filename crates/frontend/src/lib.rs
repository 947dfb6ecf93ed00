//! Dockerfile frontend: parses a Dockerfile (pest grammar for instruction lines, spanned AST),
//! expands variables like BuildKit's shell lexer, and converts the stages the target needs into
//! an llb graph plus the image config. Pure and synchronous: base images are resolved by the
//! caller between [`base_images`] and [`convert`].

pub mod ast;
mod convert;
mod error;
pub mod expand;
mod parser;

pub use ast::{Args, Directives, Dockerfile, Flag, Heredoc, Instruction, InstructionKind, KeyValue, Span};
pub use convert::{base_images, convert, BaseImage, BuildPlan, ConvertError, ConvertOptions};
pub use error::{ExpandError, ParseError};
pub use expand::Lexer;
pub use parser::{parse, split_words, suggest};
