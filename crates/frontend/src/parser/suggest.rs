//! `did you mean` suggestions for unknown instruction keywords.

use crate::ast::InstructionKind;

/// The closest instruction keyword to an unknown `word`, if close enough (optimal string
/// alignment distance, at most a third of the word's length rounded up, between 1 and 3). The
/// suggestion is lower-case when the word has no upper-case letter, upper-case otherwise.
pub(super) fn suggest_instruction(word: &str) -> Option<String> {
    let lower = word.to_lowercase();
    let len = lower.chars().count();
    let threshold = len.div_ceil(3).clamp(1, 3);
    let mut best: Option<(usize, &str)> = None;
    for k in InstructionKind::ALL {
        let d = strsim::osa_distance(&lower, &k.name().to_ascii_lowercase());
        if d <= threshold && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, k.name()));
        }
    }
    best.map(|(_, name)| {
        if word.chars().any(char::is_uppercase) {
            name.to_string()
        } else {
            name.to_ascii_lowercase()
        }
    })
}
