//! Any bytes into the `.cct` trace reader: it must yield records or a clean error naming the
//! problem, never panic or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = traces::cct::Reader::new(std::io::Cursor::new(data)) else { return };
    for item in reader {
        if let Err(e) = item {
            let _ = e.to_string();
            break;
        }
    }
});
