#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(t) = mesh_fuzz::target("gossip_frame") {
        (t.run)(data);
    }
});
