//! Any bytes into the `.ccs` scenario parser: it must return records or an error, never panic,
//! hang or allocate without bound; and whatever it accepts must print and parse back to the same
//! records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sim_core::Record;

fuzz_target!(|data: &[u8]| {
    let mut records: Vec<Record> = Vec::new();
    for item in traces::ccs::parse_reader(data, "fuzz.ccs") {
        match item {
            Ok(located) => records.push(located.record),
            Err(e) => {
                // Every error renders with its location.
                let _ = e.to_string();
                return;
            }
        }
    }
    let text = traces::ccs::write_records(&records);
    let again: Vec<Record> = match traces::ccs::parse_str(&text, "printed.ccs") {
        Ok(v) => v.into_iter().map(|l| l.record).collect(),
        Err(e) => panic!("printed scenario does not parse: {e}\n{text}"),
    };
    assert_eq!(records, again, "printed scenario reads back differently:\n{text}");
});
