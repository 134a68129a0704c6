//! Weight stepping for the canary strategy.
//!
//! Flagger's sequences are kept exactly where they are sound (`stepWeights [1,2,10,80]` gives
//! 1, 2, 10, 80; `stepWeight 50` gives 50, 100). One deliberate deviation: `maxWeight` is a
//! true cap. Flagger's code adds `stepWeight` without clamping, so step 20 / max 50 goes
//! 20, 40, 60 and the canary serves more traffic than the user allowed; its documentation says
//! maxWeight is the maximum. serin goes 20, 40, 50. (Listed in docs/migrating-from-flagger.md.)

use crate::plan::Stepping;

/// The weight at which the analysis stops stepping and the canary is promoted.
pub fn max_weight(stepping: &Stepping) -> u32 {
    match stepping {
        Stepping::Linear { max_weight, .. } => (*max_weight).min(100),
        Stepping::List { weights } => weights.last().copied().unwrap_or(100).min(100),
    }
}

/// The canary weight after one successful step from `current`. Returns `current` when the
/// maximum has been reached.
pub fn next_weight(stepping: &Stepping, current: u32) -> u32 {
    let max = max_weight(stepping);
    if current >= max {
        return current;
    }
    let next = match stepping {
        Stepping::Linear { step, .. } => current.saturating_add(*step),
        // The first listed weight above the current one. A weight between two listed values
        // (the list was edited mid-release) resumes at the next listed value.
        Stepping::List { weights } => weights
            .iter()
            .copied()
            .find(|w| *w > current)
            .unwrap_or(max),
    };
    next.min(max)
}

/// The full sequence of canary weights a release goes through, excluding the initial 0.
pub fn sequence(stepping: &Stepping) -> Vec<u32> {
    let mut out = Vec::new();
    let mut current = 0;
    loop {
        let next = next_weight(stepping, current);
        if next == current {
            return out;
        }
        out.push(next);
        current = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(step: u32, max_weight: u32) -> Stepping {
        Stepping::Linear { step, max_weight }
    }

    fn list(weights: &[u32]) -> Stepping {
        Stepping::List {
            weights: weights.to_vec(),
        }
    }

    #[test]
    fn sequences() {
        let table: &[(Stepping, &[u32])] = &[
            // maxWeight is a cap: Flagger would go 20, 40, 60.
            (linear(20, 50), &[20, 40, 50]),
            (linear(50, 100), &[50, 100]),
            (linear(10, 50), &[10, 20, 30, 40, 50]),
            (linear(5, 5), &[5]),
            (linear(30, 100), &[30, 60, 90, 100]),
            (linear(100, 100), &[100]),
            (list(&[1, 2, 10, 80]), &[1, 2, 10, 80]),
            (
                list(&[5, 10, 15, 20, 25, 30, 35, 40, 45, 50]),
                &[5, 10, 15, 20, 25, 30, 35, 40, 45, 50],
            ),
            (list(&[10, 100]), &[10, 100]),
        ];
        for (stepping, expected) in table {
            assert_eq!(sequence(stepping), *expected, "{stepping:?}");
        }
    }

    #[test]
    fn list_resumes_after_an_edit() {
        // The list changed mid-release from [10, 30, 50] to [20, 40]: 30 resumes at 40.
        assert_eq!(next_weight(&list(&[20, 40]), 30), 40);
        // Already above the new maximum: stays, the engine promotes.
        assert_eq!(next_weight(&list(&[20, 40]), 50), 50);
    }

    #[test]
    fn max_weight_is_capped_at_100() {
        assert_eq!(max_weight(&linear(10, 100)), 100);
        assert_eq!(max_weight(&list(&[1, 2, 10, 80])), 80);
    }
}
