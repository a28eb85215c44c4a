/work/main/target-old/release/deps/inventory-e92c8dc552af7396.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/inventory-0.3.25/src/lib.rs

/work/main/target-old/release/deps/libinventory-e92c8dc552af7396.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/inventory-0.3.25/src/lib.rs

/work/main/target-old/release/deps/libinventory-e92c8dc552af7396.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/inventory-0.3.25/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/inventory-0.3.25/src/lib.rs:
