//! Key management (PKCS#11 v2.40 §5.14): keys generated, wrapped, unwrapped
//! and derived. In HA mode each new session key's recipe is journalled, and
//! a generated key's *root* records whether it was used: a used random key
//! cannot be re-generated in a failover.

use crate::ck::Rv;
use crate::error::Result;
use crate::journal::{NewRecipe, RecipeKind};
use crate::port::{Attr, Mechanism, Member, Platform};

use super::objects::token_attribute;
use super::replicate::{Remake, portable};
use super::{Engine, Uses};

impl<P: Platform> Engine<P> {
    /// `C_GenerateKey`.
    pub fn generate_key(
        &self,
        handle: u64,
        mechanism: &Mechanism<'_>,
        template: &[Attr<'_>],
    ) -> Result<u64> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, index| {
                let real_mech = self.real_mechanism(s, mechanism)?;
                let token = token_attribute(template) == Some(true);
                self.home_check(s, !token)?;
                let mut login = (token && self.is_virtual()).then(|| self.logins.lock(s.slot));
                let real = m.generate_key(s.real, &real_mech, template)?;
                let h = self.adopt_new(s, index, real, !token)?;
                if let Some(login) = login.as_mut() {
                    // A generated key cannot be made again: it is carried.
                    self.replicate_new(
                        login,
                        s.slot,
                        s.member,
                        s.real,
                        "C_GenerateKey",
                        h,
                        real,
                        None,
                    )?;
                }
                if self.ha {
                    self.objects.write().set_root(h, h);
                }
                self.journal_object(
                    s,
                    NewRecipe {
                        mechanism: Some(mechanism),
                        ..NewRecipe::new(RecipeKind::GenerateKey, h, template)
                    },
                );
                Ok(h)
            },
            |_, _| {},
        )
    }

    /// `C_GenerateKeyPair`.
    pub fn generate_key_pair(
        &self,
        handle: u64,
        mechanism: &Mechanism<'_>,
        public_template: &[Attr<'_>],
        private_template: &[Attr<'_>],
    ) -> Result<(u64, u64)> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, index| {
                let real_mech = self.real_mechanism(s, mechanism)?;
                let token_public = token_attribute(public_template) == Some(true);
                let token_private = token_attribute(private_template) == Some(true);
                self.home_check(s, !token_public || !token_private)?;
                let mut login = ((token_public || token_private) && self.is_virtual())
                    .then(|| self.logins.lock(s.slot));
                let (public, private) =
                    m.generate_key_pair(s.real, &real_mech, public_template, private_template)?;
                let public_v = match self.adopt_new(s, index, public, !token_public) {
                    Ok(h) => h,
                    Err(e) => {
                        let _ = m.destroy_object(s.real, private);
                        return Err(e);
                    }
                };
                let private_v = match self.adopt_new(s, index, private, !token_private) {
                    Ok(h) => h,
                    Err(e) => {
                        let _ = m.destroy_object(s.real, public);
                        self.objects.write().remove(public_v);
                        return Err(e);
                    }
                };
                if let Some(login) = login.as_mut() {
                    self.replicate_pair(
                        login,
                        s.slot,
                        s.member,
                        s.real,
                        token_public.then_some((public_v, public)),
                        token_private.then_some((private_v, private)),
                        [(public_v, public), (private_v, private)],
                    )?;
                }
                if self.ha {
                    // Both halves come from one random key: using either
                    // uses it.
                    let mut objects = self.objects.write();
                    objects.set_root(private_v, private_v);
                    objects.set_root(public_v, private_v);
                }
                self.journal_object(
                    s,
                    NewRecipe {
                        object2: private_v,
                        mechanism: Some(mechanism),
                        template2: private_template,
                        ..NewRecipe::new(RecipeKind::GenerateKeyPair, public_v, public_template)
                    },
                );
                Ok((public_v, private_v))
            },
            |_, _| {},
        )
    }

    /// `C_WrapKey` (both keys count as used).
    pub fn wrap_key(
        &self,
        handle: u64,
        mechanism: &Mechanism<'_>,
        wrapping_key: u64,
        key: u64,
        mut out: Option<&mut [u8]>,
    ) -> Result<usize> {
        self.used(wrapping_key);
        self.used(key);
        self.call(
            handle,
            Uses::Nothing,
            |m, s, _| {
                let mechanism = self.real_mechanism(s, mechanism)?;
                let wrapping =
                    self.real_object(s, wrapping_key, Rv::WRAPPING_KEY_HANDLE_INVALID)?;
                let key = self.real_object(s, key, Rv::KEY_HANDLE_INVALID)?;
                m.wrap_key(s.real, &mechanism, wrapping, key, out.as_deref_mut())
            },
            |_, _| {},
        )
    }

    /// `C_UnwrapKey`.
    pub fn unwrap_key(
        &self,
        handle: u64,
        mechanism: &Mechanism<'_>,
        unwrapping_key: u64,
        wrapped: &[u8],
        template: &[Attr<'_>],
    ) -> Result<u64> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, index| {
                let real_mech = self.real_mechanism(s, mechanism)?;
                let unwrapping =
                    self.real_object(s, unwrapping_key, Rv::UNWRAPPING_KEY_HANDLE_INVALID)?;
                let token = token_attribute(template) == Some(true);
                self.home_check(s, !token)?;
                let source = self.objects.token_identity(unwrapping_key);
                let mut login = (token && self.is_virtual()).then(|| self.logins.lock(s.slot));
                let real = m.unwrap_key(s.real, &real_mech, unwrapping, wrapped, template)?;
                self.used(unwrapping_key);
                let h = self.adopt_new(s, index, real, !token)?;
                if let Some(login) = login.as_mut() {
                    // The same bytes under the same key, where that key is a
                    // token object (found on each member) and the mechanism
                    // names no object.
                    let remake = source
                        .as_ref()
                        .filter(|_| portable(mechanism))
                        .map(|id| Remake::Unwrap(mechanism, id, wrapped, template));
                    self.replicate_new(
                        login,
                        s.slot,
                        s.member,
                        s.real,
                        "C_UnwrapKey",
                        h,
                        real,
                        remake,
                    )?;
                }
                self.journal_object(
                    s,
                    NewRecipe {
                        source: unwrapping_key,
                        mechanism: Some(mechanism),
                        wrapped,
                        ..NewRecipe::new(RecipeKind::Unwrap, h, template)
                    },
                );
                Ok(h)
            },
            |_, _| {},
        )
    }

    /// `C_DeriveKey`.
    pub fn derive_key(
        &self,
        handle: u64,
        mechanism: &Mechanism<'_>,
        base_key: u64,
        template: &[Attr<'_>],
    ) -> Result<u64> {
        self.call(
            handle,
            Uses::Nothing,
            |m, s, index| {
                let real_mech = self.real_mechanism(s, mechanism)?;
                let base = self.real_object(s, base_key, Rv::KEY_HANDLE_INVALID)?;
                let token = token_attribute(template) == Some(true);
                self.home_check(s, !token)?;
                let source = self.objects.token_identity(base_key);
                let mut login = (token && self.is_virtual()).then(|| self.logins.lock(s.slot));
                let real = m.derive_key(s.real, &real_mech, base, template)?;
                self.used(base_key);
                let h = self.adopt_new(s, index, real, !token)?;
                if let Some(login) = login.as_mut() {
                    let remake = source
                        .as_ref()
                        .filter(|_| portable(mechanism))
                        .map(|id| Remake::Derive(mechanism, id, template));
                    self.replicate_new(
                        login,
                        s.slot,
                        s.member,
                        s.real,
                        "C_DeriveKey",
                        h,
                        real,
                        remake,
                    )?;
                }
                self.journal_object(
                    s,
                    NewRecipe {
                        source: base_key,
                        mechanism: Some(mechanism),
                        ..NewRecipe::new(RecipeKind::Derive, h, template)
                    },
                );
                Ok(h)
            },
            |_, _| {},
        )
    }
}
