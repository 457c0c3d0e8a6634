//! The vocabulary the report's parts share: the order models are shown in,
//! how a number is written in a table or on an axis, and the bounds a fixed
//! latency sets on pages per second.
//!
//! It imports no other part of the report, so the inputs can sort with it
//! and both outputs (the summary and the plots) can use it without using
//! each other.

use std::cmp::Ordering;

/// The models in the order the README presents them; others follow by name.
pub const MODEL_ORDER: [&str; 6] = [
    "sequential",
    "threads",
    "rayon",
    "tokio",
    "async-std",
    "smol",
];

/// A sort key that puts known models in the README's order.
pub fn model_rank(model: &str) -> (usize, String) {
    let rank = MODEL_ORDER
        .iter()
        .position(|m| *m == model)
        .unwrap_or(MODEL_ORDER.len());
    (rank, model.to_string())
}

/// Criterion parameters in order: numbers numerically (C=8 before C=16),
/// then the rest by text.
pub fn by_parameter(a: &str, b: &str) -> Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.total_cmp(&y),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

/// The most pages/s that `c` requests in flight allow when each takes
/// `latency_s` (Little's law).
pub fn little_bound(c: f64, latency_s: f64) -> f64 {
    c / latency_s
}

/// The most pages/s a run of `pages` can reach with `c` in flight when
/// each request takes `latency_s`: ⌈pages ÷ C⌉ rounds of one latency. It is
/// tighter than Little's law when pages is not a multiple of C, or is
/// smaller than C.
pub fn batch_bound(pages: f64, c: f64, latency_s: f64) -> f64 {
    pages / ((pages / c.floor().max(1.0)).ceil() * latency_s)
}

/// Whether a run's own bound is worth showing beside Little's law: it is
/// below it by more than rounding.
pub fn tighter(batch: f64, little: f64) -> bool {
    batch < little * 0.999
}

/// A number as a table shows it: grouped thousands for large values, a
/// few significant digits for small ones.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || (v.fract() == 0.0 && a < 1e15) {
        group_thousands(v.round() as i64)
    } else if a >= 10.0 {
        trim(v, 1)
    } else if a >= 1.0 {
        trim(v, 2)
    } else {
        trim(v, 3)
    }
}

/// A number for an axis label or a title: no trailing zeros, thousands as "k".
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 10_000.0 {
        format!("{}k", trim(v / 1000.0, 0))
    } else if a >= 1000.0 {
        format!("{}k", trim(v / 1000.0, 1))
    } else if a >= 10.0 {
        trim(v, 0)
    } else if a >= 1.0 {
        trim(v, 1)
    } else {
        trim(v, 2)
    }
}

/// `v` with at most `decimals` decimals and no trailing zeros.
pub fn trim(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn group_thousands(v: i64) -> String {
    let digits = v.unsigned_abs().to_string();
    let lead = match digits.len() % 3 {
        0 => 3,
        r => r,
    };
    let (head, rest) = digits.split_at(lead.min(digits.len()));
    let mut out = head.to_string();
    for group in rest.as_bytes().chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).unwrap_or_default());
    }
    if v < 0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(4812.4), "4,812");
        assert_eq!(num(1_234_567.0), "1,234,567");
        assert_eq!(num(123_456.0), "123,456");
        assert_eq!(num(-1500.0), "-1,500");
        assert_eq!(num(87.06), "87.1");
        assert_eq!(num(8.695), "8.7");
        assert_eq!(num(2.25), "2.25");
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(0.1234), "0.123");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(8.0), "8");
    }

    #[test]
    fn axis_numbers_are_short() {
        assert_eq!(short(1.0), "1");
        assert_eq!(short(2.5), "2.5");
        assert_eq!(short(87.066), "87");
        assert_eq!(short(1500.0), "1.5k");
        assert_eq!(short(20000.0), "20k");
        assert_eq!(short(0.25), "0.25");
    }

    #[test]
    fn parameters_sort_numbers_first_then_text() {
        let mut p = ["big", "16", "8", "1.5", "a"];
        p.sort_by(|a, b| by_parameter(a, b));
        assert_eq!(p, ["1.5", "8", "16", "a", "big"]);
    }

    #[test]
    fn a_run_smaller_than_c_is_bound_by_one_round() {
        // 50 pages at C=100 and 10 ms: one round, 5,000 pages/s, not 10,000.
        assert!((batch_bound(50.0, 100.0, 0.01) - 5000.0).abs() < 1e-9);
        assert!(tighter(5000.0, little_bound(100.0, 0.01)));
        // 500 pages at C=100: five full rounds, Little's law itself.
        assert!(!tighter(
            batch_bound(500.0, 100.0, 0.01),
            little_bound(100.0, 0.01)
        ));
    }
}
