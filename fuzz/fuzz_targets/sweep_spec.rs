//! Any bytes as a sweep specification (`ccsim sweep SPEC.toml`): TOML, the spec schema, policy,
//! preset and workload names, workload parameters and every configuration override it carries
//! (the config loader behind `--set` and `[[machine]] set`). It must return a plan or an error,
//! never panic, hang or allocate without bound; a plan it returns has unique run ids and as
//! many runs as the grid's dimensions multiply to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Relative paths resolve under a folder that does not exist.
    match ccsim::sweep::spec::Spec::expand(text, Path::new("/nonexistent-ccsim-fuzz")) {
        Ok(plan) => {
            let mut ids: Vec<&str> = plan.runs.iter().map(|r| r.id.as_str()).collect();
            ids.sort_unstable();
            let n = ids.len();
            ids.dedup();
            assert_eq!(ids.len(), n, "duplicate run ids");
            assert!(plan.runs.iter().enumerate().all(|(i, r)| r.index == i));
            assert!(plan.policies.contains(&plan.baseline));
        }
        Err(e) => {
            let _ = format!("{e:#}");
        }
    }
});
