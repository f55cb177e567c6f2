//! BLE transport for mesh.
//!
//! - [`fragment`]: splits link messages into ATT-sized GATT writes and reassembles them, with
//!   bounded state (sans-IO).
//! - [`radio`]: the [`Radio`](radio::Radio) trait the OS adapter (or an app, through the FFI
//!   crate) implements, and [`SimRadio`](radio::SimRadio), a simulated pair with MTU, latency,
//!   loss, reordering and disconnects for tests.
//! - [`link`]: an authenticated, encrypted [`Connection`](mesh_transport::Connection) over a
//!   radio: the mesh handshake, then sealed frames, both fragmented.
//!
//! GATT layout: service `6d657368-6e65-7477-6f72-6b0000000001`; characteristic
//! `...0002` (central writes, write without response) and `...0003` (peripheral notifies).
//! Each write or notification is one fragment.
//!
//! - [`transport`]: [`BleTransport`](transport::BleTransport), a `Transport` over radios the
//!   platform connected and handed over (phones: the OS connects, the app attaches).
//! - `os` (feature `btleplug`): the operating system's Bluetooth stack as a central-role
//!   `Radio`, through btleplug.
//!
//! What was exercised here: everything above the `Radio` trait, over the simulated radio. No
//! Bluetooth hardware exists on the build machine: the btleplug adapter is compiled and linted
//! in CI, never run against a device.

#![forbid(unsafe_code)]

pub mod fragment;
pub mod link;
#[cfg(all(feature = "btleplug", not(target_arch = "wasm32")))]
pub mod os;
pub mod radio;
pub mod transport;

/// The mesh GATT service UUID.
pub const SERVICE_UUID: &str = "6d657368-6e65-7477-6f72-6b0000000001";
/// Characteristic the central writes to (write without response).
pub const WRITE_CHARACTERISTIC_UUID: &str = "6d657368-6e65-7477-6f72-6b0000000002";
/// Characteristic the peripheral notifies on.
pub const NOTIFY_CHARACTERISTIC_UUID: &str = "6d657368-6e65-7477-6f72-6b0000000003";
