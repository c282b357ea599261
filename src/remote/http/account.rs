//! The account and device calls of [`HttpRemote`] (`nimbus devices`,
//! `logout`, `passwd`): not part of the [`Remote`](super::Remote) trait,
//! which is what a mount needs, but sent the same way (bearer token, one
//! refresh on 401, errors mapped alike).

use super::{json_of, HttpRemote};
use crate::protocol::{DeviceId, DeviceInfo, DeviceList, PasswordChange, PasswordChanged};
use crate::remote::RemoteError;

impl HttpRemote {
    /// The account's devices, oldest first.
    pub async fn devices(&self) -> Result<Vec<DeviceInfo>, RemoteError> {
        let url = self.url("devices");
        let resp = self.send(|c| c.get(&url)).await?;
        Ok(json_of::<DeviceList>(resp).await?.devices)
    }

    /// Revokes a device of the account: its next request gets 401.
    pub async fn revoke_device(&self, id: DeviceId) -> Result<(), RemoteError> {
        let url = self.url(&format!("devices/{id}/revoke"));
        self.send(|c| c.post(&url)).await?;
        Ok(())
    }

    /// Signs this device out: the server revokes it and deletes its tokens.
    pub async fn logout(&self) -> Result<(), RemoteError> {
        let url = self.url("auth/logout");
        self.send(|c| c.post(&url)).await?;
        Ok(())
    }

    /// Changes the account's password; the server signs every other
    /// device out. A wrong current password is `Rejected` with status 403
    /// and code `wrong_password`.
    pub async fn change_password(
        &self,
        current: &str,
        new: &str,
    ) -> Result<PasswordChanged, RemoteError> {
        let url = self.url("account/password");
        let body = PasswordChange {
            current_password: current.to_owned(),
            new_password: new.to_owned(),
        };
        let resp = self.send(|c| c.post(&url).json(&body)).await?;
        json_of(resp).await
    }
}
