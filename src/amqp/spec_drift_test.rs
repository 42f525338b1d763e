//! Fails when `src/amqp/spec.rs` no longer matches what
//! `scripts/gen_spec.py` generates from the spec XML (someone edited the
//! generated file, or changed the generator without regenerating).

use std::path::Path;
use std::process::Command;

#[test]
fn generated_spec_is_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("python3")
        .arg(root.join("scripts").join("gen_spec.py"))
        .arg("--check")
        .current_dir(root)
        .output()
        .expect("python3 must be installed to check the generated spec");
    assert!(
        output.status.success(),
        "spec.rs drifted from scripts/gen_spec.py:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
