//! Every input `#[primer]` rejects, with the exact compiler message.

#[test]
fn primer_rejects_bad_input_with_precise_errors() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
