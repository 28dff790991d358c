//! A device's way into the relay and out of it: admitting its handshake, joining
//! the hub with the head to greet it with, announcing it, and leaving.

use ferry_proto::CloseCode;
use ferry_proto::b64u;
use ferry_proto::message::ServerMessage;
use tokio_util::sync::CancellationToken;

use super::Relay;
use super::admissions::Admitted;
use super::hub::{SessionHandle, SessionLink};
use crate::model::{DeviceCert, DeviceId, UnixMs, UserId};
use crate::store::StoreError;

/// What admitting a device leaves for its greeting ([`Relay::join`]): the head read
/// with the device (or remembered with the admission) together with the hub's
/// generation for the user taken before that read, and the admission memo's epoch
/// taken before the device was admitted.
#[derive(Clone, Copy, Debug)]
pub struct Admission {
    hint: Option<Admitted>,
    epoch: u64,
}

/// A session that joined the hub: its link, and the head its `auth_ok` carries.
pub struct Joined {
    /// The session's registration (its queue and kill switch).
    pub link: SessionLink,
    /// The user's head to greet the device with.
    pub head: u64,
}

/// What the store says about a device that completed the handshake's
/// authentication, and whether it was first seen now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceAdmission {
    /// The device is known (or registered now) and not revoked.
    pub active: bool,
    /// The user's head, when the device was known and the read brought it.
    pub head: Option<u64>,
}

impl Relay {
    /// The verdict on an authenticated device: active when the admission memo has it;
    /// otherwise the store's, registered on first sight and refused when revoked (the
    /// same rule as a REST login, [`Relay::admit_device`]). `Ok((active, admission))`.
    pub async fn admit(
        &self,
        user: &UserId,
        device: &DeviceId,
        cert: &DeviceCert,
    ) -> Result<(bool, Admission), StoreError> {
        let inner = &self.inner;
        let epoch = inner.admissions.epoch();
        let source = |s: &str| inner.metrics.device_checks.with_label_values(&[s]).inc();
        if let Some(a) = inner.admissions.get(user, device) {
            source("memo");
            let hint = Some(a);
            return Ok((true, Admission { hint, epoch }));
        }
        source("store");
        // Taken before the store read: see `Admission`.
        let generation = inner.hub.generation(user);
        let a = self
            .admit_device(user, device, cert, inner.clock.unix_ms())
            .await?;
        if !a.active {
            return Ok((false, Admission { hint: None, epoch }));
        }
        let hint = a.head.map(|head| Admitted { generation, head });
        if let Some(h) = hint {
            inner.admissions.put(user, device, epoch, h);
        }
        Ok((true, Admission { hint, epoch }))
    }

    /// Admits a device for a handshake or a REST login: a known device costs one
    /// read (which also brings the head a greeting needs) and no write; a device
    /// seen for the first time is registered, after its keys are checked to be
    /// prime-order points. A revoked device is not active.
    pub async fn admit_device(
        &self,
        user: &UserId,
        device: &DeviceId,
        cert: &DeviceCert,
        now: UnixMs,
    ) -> Result<DeviceAdmission, StoreError> {
        let store = &self.inner.store;
        if let Some((d, head)) = store.device_and_head(user, device).await? {
            return Ok(DeviceAdmission {
                active: d.revoked_at.is_none(),
                head: Some(head),
            });
        }
        // First sight: the keys must be prime-order points (checked once, here).
        let prime_order = |k: &[u8; 32]| {
            ferry_proto::keys::parse_identity_key(k)
                .and_then(|k| ferry_proto::keys::require_prime_order(&k))
                .is_ok()
        };
        let active = prime_order(&user.0)
            && prime_order(&device.0)
            && store
                .register_device(user, device, cert, now)
                .await?
                .revoked_at
                .is_none();
        Ok(DeviceAdmission { active, head: None })
    }

    /// Registers a session of an admitted device in the hub (an older session of
    /// the same device closes with 4011) and finds the head to greet it with.
    ///
    /// Registering comes before taking the head: an event committed in between is
    /// then relayed (the device drops seqs it already has) instead of missed. The
    /// admission's head stands in for a fresh read only if the hub's generation
    /// shows that no delivery to the user happened since that read began. When the
    /// head cannot be read the session leaves the hub again and nothing was
    /// announced.
    pub async fn join(
        &self,
        user: UserId,
        device: DeviceId,
        admission: Admission,
        parent: &CancellationToken,
    ) -> Result<Joined, StoreError> {
        let inner = &self.inner;
        let link = inner.hub.register(user, device, parent);
        let head = match admission.hint {
            Some(h) if inner.hub.generation(&user) == h.generation => h.head,
            _ => {
                // Taken before the read: see `Admission`.
                let generation = inner.hub.generation(&user);
                match inner.store.head(&user).await {
                    Ok(head) => {
                        let fresh = Admitted { generation, head };
                        inner.admissions.put(&user, &device, admission.epoch, fresh);
                        head
                    }
                    Err(e) => {
                        inner.hub.unregister(&link.handle);
                        return Err(e);
                    }
                }
            }
        };
        if let Some(d) = self.directory() {
            d.joined(user, device);
        }
        Ok(Joined { link, head })
    }

    /// Tells the user's other sessions that the session's device is online (after
    /// its greeting went out).
    pub fn announce_online(&self, handle: &SessionHandle) {
        self.presence(
            handle.user(),
            handle.device(),
            true,
            false,
            self.inner.clock.unix_ms(),
        );
    }

    /// Ends a session that joined: leaves the hub, announces the device offline
    /// unless `closed_with` says a successor keeps it online (4011) or its
    /// revocation was announced already (4003), and records `last_seen` (written in
    /// the background). Ending a session never writes to the store.
    pub fn leave(&self, handle: &SessionHandle, closed_with: Option<CloseCode>) {
        let inner = &self.inner;
        inner.hub.unregister(handle);
        let (user, device) = (*handle.user(), *handle.device());
        if let Some(d) = self.directory() {
            d.left(user, device);
        }
        if !matches!(closed_with, Some(CloseCode::Replaced | CloseCode::Revoked)) {
            self.presence(&user, &device, false, false, inner.clock.unix_ms());
        }
        inner.last_seen.record(user, device, inner.clock.unix_ms());
    }

    /// Sends `presence` to every live session of `user` except `device`'s own.
    pub(super) fn presence(
        &self,
        user: &UserId,
        device: &DeviceId,
        online: bool,
        revoked: bool,
        ts: UnixMs,
    ) {
        self.inner.hub.fanout(user, Some(device), None, || {
            super::Outbound::message(
                &ServerMessage::Presence {
                    device: b64u::encode(&device.0),
                    online,
                    ts,
                    revoked,
                }
                .to_json(),
            )
        });
    }
}
