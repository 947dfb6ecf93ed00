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
        let d = osa_distance(&lower, &k.name().to_ascii_lowercase());
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

/// Optimal-string-alignment edit distance (Levenshtein plus adjacent transpositions).
fn osa_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len() > 64 {
        return usize::MAX; // far too long to be a typo of a keyword
    }
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}
