//! BLE transport for mesh. This crate currently provides the GATT message layer:
//! [`fragment`] splits link messages into ATT-sized writes and reassembles them, with bounded
//! state. The `Radio` trait, the simulated radio and the OS adapter follow.

#![forbid(unsafe_code)]

pub mod fragment;
