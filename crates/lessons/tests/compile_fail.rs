//! The `unawaited-future` lesson's mistake, refused by the compiler: with
//! `#![deny(unused_must_use)]`, a future that is built and dropped without
//! `.await` is an error, not a warning. (tests/compile-fail/*.stderr holds
//! the exact message; `TRYBUILD=overwrite cargo test -p lessons --test
//! compile_fail` rewrites it after a compiler upgrade changes its wording.)

#[test]
fn an_unawaited_future_does_not_compile_under_deny_unused_must_use() {
    trybuild::TestCases::new().compile_fail("tests/compile-fail/unawaited_future.rs");
}
