//! Every committed fuzz input, replayed on every `cargo test`: the seed corpora the fuzzer
//! grew (`fuzz/corpus/<target>/`) and the reproducers of crashes it found
//! (`fuzz/regressions/<target>/`, each named after what it broke). A decoder that panics on
//! one of them, or a harness invariant that no longer holds, fails here without libFuzzer.

use std::path::{Path, PathBuf};

use mesh_fuzz::{TARGETS, messages, target};

fn dir(kind: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(kind).join(name)
}

fn files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in entries {
        let p = e?.path();
        if p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

#[test]
fn every_target_has_seeds_that_reach_past_the_first_check() {
    for t in TARGETS {
        let seeds = (t.seeds)();
        assert!(!seeds.is_empty(), "{}: no seeds", t.name);
        let accepted = seeds.iter().filter(|s| (t.run)(s)).count();
        assert!(accepted > 0, "{}: no seed decodes as valid", t.name);
    }
}

#[test]
fn targets_have_unique_names_and_a_libfuzzer_binary_each() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("libfuzzer/Cargo.toml")).expect("manifest");
    for (i, t) in TARGETS.iter().enumerate() {
        assert!(
            TARGETS[..i].iter().all(|o| o.name != t.name),
            "{} twice",
            t.name
        );
        assert!(target(t.name).is_some());
        let bin = root.join(format!("libfuzzer/fuzz_targets/{}.rs", t.name));
        let source =
            std::fs::read_to_string(&bin).unwrap_or_else(|_| panic!("{} missing", bin.display()));
        assert!(
            source.contains(&format!("target(\"{}\")", t.name)),
            "{} runs another target",
            bin.display()
        );
        assert!(
            manifest.contains(&format!("name = \"{}\"", t.name)),
            "{} not in libfuzzer/Cargo.toml",
            t.name
        );
    }
}

#[test]
fn committed_corpora_and_crash_reproducers_replay_cleanly() {
    let mut replayed = 0;
    for t in TARGETS {
        for kind in ["corpus", "regressions"] {
            for file in files(&dir(kind, t.name)).expect("readable corpus") {
                let input = std::fs::read(&file).expect("readable input");
                // A panic names the file through the test's output.
                eprintln!("replaying {}", file.display());
                (t.run)(&input);
                replayed += 1;
            }
        }
    }
    assert!(
        replayed >= TARGETS.len(),
        "corpora missing: {replayed} inputs"
    );
}

#[test]
fn message_splitting_is_total_and_inverts_join() {
    let parts: [&[u8]; 3] = [b"a", b"", &[7; 300]];
    let joined = mesh_fuzz::join(&parts);
    assert_eq!(messages(&joined).collect::<Vec<_>>(), parts.to_vec());
    // Cut short: the last message is what is left; a lone length byte is dropped.
    assert_eq!(
        messages(&[5, 0, 1, 2]).collect::<Vec<_>>(),
        vec![&[1u8, 2][..]]
    );
    assert_eq!(messages(&[5]).count(), 0);
}

#[test]
fn harnesses_refuse_garbage_and_catch_broken_invariants() {
    // Empty and random-looking inputs decode nowhere (a harness that accepted them would not
    // be exercising its decoder).
    for t in TARGETS {
        assert!(!(t.run)(&[]), "{} accepts empty input", t.name);
    }
    // Any one-bit change to a signed seed is refused: the harness reaches the signature
    // check and does not accept what the signature does not cover.
    let signed = target("signed").expect("target");
    let seed = (signed.seeds)().remove(0);
    assert!((signed.run)(&seed));
    for i in 0..seed.len() {
        let mut m = seed.clone();
        m[i] ^= 1;
        assert!(!(signed.run)(&m), "signed accepts a flipped bit at {i}");
    }
}
