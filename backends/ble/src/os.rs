//! The operating system's Bluetooth stack as a [`Radio`], through btleplug (feature
//! `btleplug`; BlueZ over D-Bus on Linux, CoreBluetooth on macOS and iOS, WinRT on Windows).
//!
//! btleplug acts as a GATT *central* only: this adapter finds a peripheral advertising the mesh
//! service, subscribes to its notify characteristic and writes without response to its write
//! characteristic; the mesh link on top is the central side of [`crate::link`]. Peripheral
//! (advertising) roles come from the platform through the FFI crate's `Radio` seam.
//!
//! What was exercised: this compiles and is linted in CI on Linux against BlueZ's D-Bus
//! interface. No Bluetooth hardware exists on the build machine, so no scan, connection, write
//! or notification has been run through it; the link logic above it is tested over
//! [`crate::radio::SimRadio`].

use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use btleplug::api::{
    Central as _, Characteristic, Manager as _, Peripheral as _, ScanFilter, ValueNotification,
    WriteType,
};
use btleplug::platform::{Manager, Peripheral};
use futures_util::{Stream, StreamExt as _};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::radio::{Radio, RadioError};
use crate::{NOTIFY_CHARACTERISTIC_UUID, SERVICE_UUID, WRITE_CHARACTERISTIC_UUID};

/// Why the OS radio could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OsRadioError {
    /// The platform has no Bluetooth adapter (or no permission to use one).
    #[error("no Bluetooth adapter")]
    NoAdapter,
    /// No peripheral advertising the mesh service was found in time.
    #[error("no mesh peripheral found")]
    NotFound,
    /// The peripheral lacks one of the mesh characteristics.
    #[error("peripheral has no {0} characteristic")]
    MissingCharacteristic(&'static str),
    /// The Bluetooth stack reported an error.
    #[error("bluetooth: {0}")]
    Bluetooth(String),
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(bt)`
fn bt(e: btleplug::Error) -> OsRadioError {
    OsRadioError::Bluetooth(e.to_string())
}

fn uuid(s: &str) -> Uuid {
    // The constants are valid UUIDs (a unit test checks them).
    Uuid::from_str(s).unwrap_or_default()
}

type Notifications = Pin<Box<dyn Stream<Item = ValueNotification> + Send>>;

/// A connected mesh peripheral, seen from the central.
pub struct BtleplugRadio {
    peripheral: Peripheral,
    write: Characteristic,
    notify: Uuid,
    notifications: Mutex<Notifications>,
}

impl std::fmt::Debug for BtleplugRadio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BtleplugRadio")
            .field("mtu", &self.peripheral.mtu())
            .finish_non_exhaustive()
    }
}

impl BtleplugRadio {
    /// Scans on the first adapter for a peripheral advertising the mesh service and connects to
    /// the first one found within `timeout`.
    ///
    /// # Errors
    /// [`OsRadioError`].
    pub async fn connect_first(timeout: Duration) -> Result<Self, OsRadioError> {
        let manager = Manager::new().await.map_err(bt)?;
        let central = manager
            .adapters()
            .await
            .map_err(bt)?
            .into_iter()
            .next()
            .ok_or(OsRadioError::NoAdapter)?;
        let service = uuid(SERVICE_UUID);
        central
            .start_scan(ScanFilter {
                services: vec![service],
            })
            .await
            .map_err(bt)?;
        let found = tokio::time::timeout(timeout, async {
            loop {
                for p in central.peripherals().await.map_err(bt)? {
                    let advertises = p
                        .properties()
                        .await
                        .map_err(bt)?
                        .is_some_and(|props| props.services.contains(&service));
                    if advertises {
                        return Ok::<_, OsRadioError>(p);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        let _ = central.stop_scan().await;
        let peripheral = found.map_err(|_| OsRadioError::NotFound)??;
        Self::connect(peripheral).await
    }

    /// Connects to `peripheral`, finds the mesh characteristics and subscribes to
    /// notifications.
    ///
    /// # Errors
    /// [`OsRadioError`].
    pub async fn connect(peripheral: Peripheral) -> Result<Self, OsRadioError> {
        if !peripheral.is_connected().await.map_err(bt)? {
            peripheral.connect().await.map_err(bt)?;
        }
        peripheral.discover_services().await.map_err(bt)?;
        let chars = peripheral.characteristics();
        let find = |id: &str, what: &'static str| {
            let id = uuid(id);
            chars
                .iter()
                .find(|c| c.uuid == id)
                .cloned()
                .ok_or(OsRadioError::MissingCharacteristic(what))
        };
        let write = find(WRITE_CHARACTERISTIC_UUID, "write")?;
        let notify = find(NOTIFY_CHARACTERISTIC_UUID, "notify")?;
        peripheral.subscribe(&notify).await.map_err(bt)?;
        let notifications = peripheral.notifications().await.map_err(bt)?;
        Ok(Self {
            peripheral,
            write,
            notify: notify.uuid,
            notifications: Mutex::new(notifications),
        })
    }
}

#[async_trait]
impl Radio for BtleplugRadio {
    /// The negotiated ATT MTU as the platform reports it, within 23..=517.
    fn mtu(&self) -> usize {
        usize::from(self.peripheral.mtu()).clamp(23, 517)
    }

    async fn write(&self, data: &[u8]) -> Result<(), RadioError> {
        let max = self.mtu() - 3;
        if data.len() > max {
            return Err(RadioError::TooLarge {
                len: data.len(),
                max,
            });
        }
        self.peripheral
            .write(&self.write, data, WriteType::WithoutResponse)
            .await
            .map_err(|_| RadioError::Disconnected)
    }

    async fn read(&self) -> Result<Vec<u8>, RadioError> {
        let mut notifications = self.notifications.lock().await;
        loop {
            match notifications.next().await {
                Some(n) if n.uuid == self.notify => return Ok(n.value),
                Some(_) => {}
                None => return Err(RadioError::Disconnected),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_uuids_parse() {
        for s in [
            SERVICE_UUID,
            WRITE_CHARACTERISTIC_UUID,
            NOTIFY_CHARACTERISTIC_UUID,
        ] {
            assert_ne!(uuid(s), Uuid::nil(), "{s}");
            assert_eq!(uuid(s).to_string(), s);
        }
    }
}
