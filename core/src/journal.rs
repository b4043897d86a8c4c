//! The per-session journal of HA mode: what a session has done that a new
//! session on another member must redo to be in the same state.
//!
//! It lives in a byte buffer the platform hands in (one per session), cut
//! into four regions:
//!
//! ```text
//! | recipes (session objects, in order) | find template | op parameter | found handles | update data |
//! ```
//!
//! Everything is copied in: templates, mechanism parameters (decoded by the
//! C ABI as far as p11ha knows their layout) and Update data, so that replay
//! never reads the application's memory. What cannot be copied (a parameter
//! of unknown layout, a template with nested templates, data past the limit,
//! a full region) makes that part *lost*: the session goes on normally, and
//! a failover would end that part with a clear error instead of a different
//! result. The engine reports the reason once, as PTK's "Session
//! potentially not recoverable" warning.

use core::fmt;

use heapless::Vec;

use crate::bytes::{Reader, Writer};
use crate::ck::{ParamKind, attr};
use crate::port::{Attr, Mechanism, Op, Param};

/// The most attributes of one template a journal keeps.
pub const MAX_ATTRS: usize = 32;

/// Sizes of a journal buffer's regions; the update region is what is left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Session-object recipes.
    pub recipes: usize,
    /// The active search's template.
    pub find_template: usize,
    /// The active operation's mechanism parameter.
    pub op_param: usize,
    /// Handles the active search has returned (4 bytes each).
    pub found: usize,
}

impl Layout {
    /// The regions for a host: 8 KiB of recipes, 1 KiB of find template,
    /// 1 KiB of parameter, 1024 found handles.
    pub const HOST: Layout = Layout {
        recipes: 8 * 1024,
        find_template: 1024,
        op_param: 1024,
        found: 4 * 1024,
    };

    /// The bytes before the update region.
    pub const fn fixed(&self) -> usize {
        self.recipes + self.find_template + self.op_param + self.found
    }
}

/// Why part of a session cannot be rebuilt. Its text ([`Lost::desc`]) is
/// the `<desc>` of PTK's "Session potentially not recoverable: <desc>".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Lost {
    /// The operation's Update data passed the data length limit.
    LimitPassed,
    /// The mechanism parameter's layout is unknown, or it does not fit.
    ParameterNotCopyable,
    /// A template with nested templates, or more than the journal keeps.
    TemplateNotCopyable,
    /// The session-object region of the journal is full.
    RecipesFull,
    /// The search returned more handles than the journal keeps.
    FoundFull,
    /// A second operation at once (a dual-function update).
    TwoOperations,
    /// A generated key was used, so a re-generated one would differ.
    RandomKeyUsed,
    /// `C_DigestKey` digests a key's value, which the journal cannot keep.
    DigestKey,
    /// The operation state came from the application.
    SetOperationState,
    /// The login went through a protected authentication path.
    ProtectedLogin,
    /// The PIN is longer than p11ha keeps.
    PinTooLong,
    /// An operation's key was authenticated with `CKU_CONTEXT_SPECIFIC`.
    ContextLogin,
    /// A session object whose recipe could not be journalled.
    ObjectNotJournalled,
}

impl Lost {
    /// PTK's `<desc>`: what the application did.
    pub const fn desc(self) -> &'static str {
        match self {
            Lost::LimitPassed => "update data past the data length limit",
            Lost::ParameterNotCopyable => "mechanism parameters p11ha cannot deep-copy",
            Lost::TemplateNotCopyable => "a template p11ha cannot copy (nested or too large)",
            Lost::RecipesFull => "the session object journal is full",
            Lost::FoundFull => "more search results than the journal keeps",
            Lost::TwoOperations => "two operations at once (dual-function or C_DigestKey)",
            Lost::RandomKeyUsed => "a randomly generated key was used in a cryptographic operation",
            Lost::DigestKey => "C_DigestKey",
            Lost::SetOperationState => "C_SetOperationState",
            Lost::ProtectedLogin => "protected-path login",
            Lost::PinTooLong => "a PIN longer than p11ha keeps",
            Lost::ContextLogin => "context-specific login",
            Lost::ObjectNotJournalled => "a session object p11ha could not journal",
        }
    }
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.desc())
    }
}

/// What replays the active operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpRecord {
    /// Which operation.
    pub op: Op,
    /// `CKM_*`.
    pub mechanism: u64,
    /// The key's virtual handle (0 for a digest).
    pub key: u64,
    /// Update bytes kept.
    pub data_len: usize,
    /// Why the operation cannot be replayed, if it cannot.
    pub lost: Option<Lost>,
}

/// What restarts the active search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FindRecord {
    /// Template bytes kept (encoded).
    pub template_len: usize,
    /// Handles returned so far.
    pub found: usize,
    /// Why the search cannot be restarted, if it cannot.
    pub lost: Option<Lost>,
    /// After a failover: results are filtered against those returned.
    pub resumed: bool,
}

/// Kinds of session-object recipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecipeKind {
    /// `C_CreateObject(template)`.
    Create = 1,
    /// `C_CopyObject(source, template)`.
    Copy = 2,
    /// `C_GenerateKey(mechanism, template)`.
    GenerateKey = 3,
    /// `C_GenerateKeyPair(mechanism, public, private)`.
    GenerateKeyPair = 4,
    /// `C_DeriveKey(mechanism, base, template)`.
    Derive = 5,
    /// `C_UnwrapKey(mechanism, unwrapping key, wrapped, template)`.
    Unwrap = 6,
    /// `C_SetAttributeValue(object, template)` on a session object.
    SetAttributes = 7,
}

impl RecipeKind {
    fn from_u8(x: u8) -> Option<Self> {
        Some(match x {
            1 => RecipeKind::Create,
            2 => RecipeKind::Copy,
            3 => RecipeKind::GenerateKey,
            4 => RecipeKind::GenerateKeyPair,
            5 => RecipeKind::Derive,
            6 => RecipeKind::Unwrap,
            7 => RecipeKind::SetAttributes,
            _ => return None,
        })
    }
}

/// How a session object was made, as the engine hands it to the journal.
#[derive(Clone, Copy, Debug)]
pub struct NewRecipe<'a> {
    /// What made the object.
    pub kind: RecipeKind,
    /// The object's virtual handle (the public key of a pair).
    pub object: u64,
    /// The private key of a pair, or 0.
    pub object2: u64,
    /// The source, base or unwrapping key (virtual), or 0.
    pub source: u64,
    /// The mechanism, where there is one.
    pub mechanism: Option<&'a Mechanism<'a>>,
    /// The wrapped key of an unwrap.
    pub wrapped: &'a [u8],
    /// The (first) template.
    pub template: &'a [Attr<'a>],
    /// The private key's template of a pair.
    pub template2: &'a [Attr<'a>],
}

impl<'a> NewRecipe<'a> {
    /// A recipe of `kind` for `object` from `template`; the other fields
    /// empty, to be filled with struct update syntax.
    pub fn new(kind: RecipeKind, object: u64, template: &'a [Attr<'a>]) -> Self {
        NewRecipe {
            kind,
            object,
            object2: 0,
            source: 0,
            mechanism: None,
            wrapped: &[],
            template,
            template2: &[],
        }
    }
}

/// A decoded recipe, borrowing the journal.
#[derive(Debug)]
pub struct Recipe<'a> {
    /// What made the object.
    pub kind: RecipeKind,
    /// The object's virtual handle (the public key of a pair).
    pub object: u64,
    /// The private key of a pair.
    pub object2: u64,
    /// The source, base or unwrapping key (virtual), or 0.
    pub source: u64,
    /// The mechanism, where there is one.
    pub mechanism: Option<Mechanism<'a>>,
    /// The wrapped key of an unwrap.
    pub wrapped: &'a [u8],
    /// The (first) template.
    pub template: Vec<Attr<'a>, MAX_ATTRS>,
    /// The private key's template of a pair.
    pub template2: Vec<Attr<'a>, MAX_ATTRS>,
}

/// The journal of one session.
pub struct Journal<B> {
    buf: B,
    layout: Layout,
    limit: usize,
    recipes_len: usize,
    /// The active search.
    pub find: Option<FindRecord>,
    /// The active operation.
    pub op: Option<OpRecord>,
    param_len: usize,
}

impl<B> Journal<B>
where
    B: core::ops::DerefMut<Target = [u8]>,
{
    /// A journal over `buf` (any contents) cut as `layout` says; `limit`
    /// caps the update data below what the buffer leaves for it. A buffer
    /// smaller than `layout.fixed()` makes a journal that keeps nothing:
    /// everything is lost (NORMAL and WLD mode give empty buffers).
    pub fn new(buf: B, layout: Layout, limit: usize) -> Self {
        let room = buf.len().saturating_sub(layout.fixed());
        Journal {
            layout: if buf.len() >= layout.fixed() {
                layout
            } else {
                Layout {
                    recipes: 0,
                    find_template: 0,
                    op_param: 0,
                    found: 0,
                }
            },
            limit: limit.min(room),
            buf,
            recipes_len: 0,
            find: None,
            op: None,
            param_len: 0,
        }
    }

    /// The update data limit in force.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Forgets everything (the session closed).
    pub fn clear(&mut self) {
        self.recipes_len = 0;
        self.find = None;
        self.op = None;
        self.param_len = 0;
    }

    fn region(&self, which: usize) -> core::ops::Range<usize> {
        let l = &self.layout;
        let starts = [
            0,
            l.recipes,
            l.recipes + l.find_template,
            l.recipes + l.find_template + l.op_param,
            l.fixed(),
        ];
        let ends = [
            l.recipes,
            l.recipes + l.find_template,
            l.recipes + l.find_template + l.op_param,
            l.fixed(),
            l.fixed() + self.limit,
        ];
        starts[which]..ends[which]
    }

    // ---- operations ---------------------------------------------------------

    /// An operation started. Returns the reason it cannot be replayed, if it
    /// cannot (the caller reports it).
    pub fn op_begin(&mut self, op: Op, mechanism: &Mechanism<'_>, key: u64) -> Option<Lost> {
        if self.op.is_some() {
            // A second operation at once: neither can be replayed exactly.
            if let Some(o) = &mut self.op {
                o.lost = Some(Lost::TwoOperations);
            }
            return Some(Lost::TwoOperations);
        }
        let r = self.region(2);
        let lost = match encode_param(&mechanism.param, &mut self.buf[r]) {
            Some(n) => {
                self.param_len = n;
                None
            }
            None => Some(Lost::ParameterNotCopyable),
        };
        self.op = Some(OpRecord {
            op,
            mechanism: mechanism.ty,
            key,
            data_len: 0,
            lost,
        });
        lost
    }

    /// Update data the member accepted. Returns the reason the operation
    /// became unreplayable if this is what made it so.
    pub fn op_update(&mut self, data: &[u8]) -> Option<Lost> {
        let start = self.region(4).start;
        let limit = self.limit;
        let op = self.op.as_mut()?;
        if op.lost.is_some() {
            return None;
        }
        if op.data_len + data.len() > limit {
            op.lost = Some(Lost::LimitPassed);
            return op.lost;
        }
        let at = start + op.data_len;
        self.buf[at..at + data.len()].copy_from_slice(data);
        op.data_len += data.len();
        None
    }

    /// Marks the active operation (if any) unreplayable. Returns the reason
    /// if this changed anything.
    pub fn op_lose(&mut self, why: Lost) -> Option<Lost> {
        let op = self.op.as_mut()?;
        if op.lost.is_some() {
            return None;
        }
        op.lost = Some(why);
        Some(why)
    }

    /// The operation ended.
    pub fn op_end(&mut self) {
        self.op = None;
    }

    /// The active operation's mechanism, as it was given.
    pub fn op_mechanism(&self) -> Option<Mechanism<'_>> {
        let op = self.op.as_ref()?;
        let r = self.region(2);
        let param = decode_param(&self.buf[r.start..r.start + self.param_len])?;
        Some(Mechanism {
            ty: op.mechanism,
            param,
        })
    }

    /// The update data kept.
    pub fn op_data(&self) -> &[u8] {
        let n = self.op.as_ref().map_or(0, |o| o.data_len);
        let s = self.region(4).start;
        &self.buf[s..s + n]
    }

    // ---- search -------------------------------------------------------------

    /// A search started. Returns the reason it cannot be restarted, if so.
    pub fn find_begin(&mut self, template: &[Attr<'_>]) -> Option<Lost> {
        let r = self.region(1);
        let (template_len, lost) = match encode_template(template, &mut self.buf[r]) {
            Some(n) => (n, None),
            None => (0, Some(Lost::TemplateNotCopyable)),
        };
        self.find = Some(FindRecord {
            template_len,
            found: 0,
            lost,
            resumed: false,
        });
        lost
    }

    /// The active search's template.
    pub fn find_template(&self) -> Option<Vec<Attr<'_>, MAX_ATTRS>> {
        let f = self.find.as_ref()?;
        let r = self.region(1);
        decode_template(&mut Reader::new(
            &self.buf[r.start..r.start + f.template_len],
        ))
    }

    /// Whether the active search already returned `handle`.
    pub fn find_returned(&self, handle: u64) -> bool {
        let Some(f) = &self.find else {
            return false;
        };
        let r = self.region(3);
        self.buf[r.start..r.start + 4 * f.found]
            .chunks_exact(4)
            .any(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])) == handle)
    }

    /// The application received `handle` from the search: recorded once the
    /// call that returns it can no longer fail over, so that a restarted
    /// search leaves out exactly what the application has. Returns the
    /// reason the search became unrestartable if this is what made it so.
    pub fn find_record(&mut self, handle: u64) -> Option<Lost> {
        let r = self.region(3);
        let f = self.find.as_mut()?;
        if f.lost.is_some() {
            return None;
        }
        let at = r.start + 4 * f.found;
        if at + 4 > r.end {
            f.lost = Some(Lost::FoundFull);
            return f.lost;
        }
        // Virtual handles are at most 31 bits.
        self.buf[at..at + 4].copy_from_slice(&(handle as u32).to_le_bytes());
        f.found += 1;
        None
    }

    /// The search ended.
    pub fn find_end(&mut self) {
        self.find = None;
    }

    // ---- session objects ----------------------------------------------------

    /// Records how a session object was made. `false` if the recipe does not
    /// fit or cannot be copied (the object would be lost in a failover).
    pub fn recipe(&mut self, new: &NewRecipe<'_>) -> bool {
        let NewRecipe {
            kind,
            object,
            object2,
            source,
            mechanism,
            wrapped,
            template,
            template2,
        } = *new;
        let r = self.region(0);
        let start = r.start + self.recipes_len;
        let mut w = Writer::new(&mut self.buf[start..r.end]);
        let ok = (|| {
            w.u8(kind as u8)?;
            // Alive: bit 0 the object, bit 1 the second (a pair's private key).
            w.u8(if object2 != 0 { 3 } else { 1 })?;
            w.u32_le(0)?; // length, patched below
            w.u32_le(object as u32)?;
            w.u32_le(object2 as u32)?;
            w.u32_le(source as u32)?;
            match mechanism {
                Some(m) => {
                    w.u8(1)?;
                    w.u64_le(m.ty)?;
                    let n = encode_param(&m.param, w.rest())?;
                    w.skip(n)?;
                }
                None => w.u8(0)?,
            }
            put_bytes(&mut w, wrapped)?;
            let n = encode_template(template, w.rest())?;
            w.skip(n)?;
            let n = encode_template(template2, w.rest())?;
            w.skip(n)
        })();
        if ok.is_none() {
            return false;
        }
        let len = w.len();
        self.buf[start + 2..start + 6].copy_from_slice(&(len as u32).to_le_bytes());
        self.recipes_len += len;
        true
    }

    /// Drops the dead recipes, and the live ones whose object `keep` says
    /// is no longer this session's (another session destroyed it), moving
    /// the rest down in order: room for new recipes in a session that makes
    /// and destroys objects for a long time. Whether room was made.
    pub fn compact_recipes(&mut self, keep: impl Fn(u64) -> bool) -> bool {
        let r = self.region(0);
        let end = r.start + self.recipes_len;
        let (mut read, mut write) = (r.start, r.start);
        while read + 18 <= end {
            let len = read_u32(&self.buf[read + 2..]) as usize;
            if len == 0 || read + len > end {
                break;
            }
            let object = u64::from(read_u32(&self.buf[read + 6..]));
            let object2 = u64::from(read_u32(&self.buf[read + 10..]));
            let alive = self.buf[read + 1];
            if (alive & 1 != 0 && keep(object)) || (alive & 2 != 0 && keep(object2)) {
                self.buf.copy_within(read..read + len, write);
                write += len;
            }
            read += len;
        }
        let freed = write < end;
        self.recipes_len = write - r.start;
        freed
    }

    /// Marks the recipes that made `object` (and changed it) dead: it was
    /// destroyed, or cannot be rebuilt. A key pair's recipe stays alive
    /// while either of its keys is.
    pub fn forget_object(&mut self, object: u64) {
        let r = self.region(0);
        let mut at = r.start;
        while at + 18 <= r.start + self.recipes_len {
            let len = read_u32(&self.buf[at + 2..]) as usize;
            let o = u64::from(read_u32(&self.buf[at + 6..]));
            let o2 = u64::from(read_u32(&self.buf[at + 10..]));
            if o == object {
                self.buf[at + 1] &= !1;
            }
            if o2 == object {
                self.buf[at + 1] &= !2;
            }
            if len == 0 {
                break;
            }
            at += len;
        }
    }

    /// The live recipes, in the order the objects were made.
    pub fn recipes(&self) -> impl Iterator<Item = Recipe<'_>> {
        let r = self.region(0);
        let buf = &self.buf[r.start..r.start + self.recipes_len];
        let mut at = 0;
        core::iter::from_fn(move || {
            loop {
                if at + 18 > buf.len() {
                    return None;
                }
                let len = read_u32(&buf[at + 2..]) as usize;
                if len == 0 || at + len > buf.len() {
                    return None;
                }
                let rec = &buf[at..at + len];
                at += len;
                if rec[1] == 0 {
                    continue;
                }
                return decode_recipe(rec);
            }
        })
    }
}

/// A byte string: its length (u32) and its bytes.
fn put_bytes(w: &mut Writer<'_>, b: &[u8]) -> Option<()> {
    w.u32_le(u32::try_from(b.len()).ok()?)?;
    w.put(b)
}

fn get_bytes<'a>(r: &mut Reader<'a>) -> Option<&'a [u8]> {
    let n = usize::try_from(r.u32_le()?).ok()?;
    r.take(n)
}

fn read_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn decode_recipe(rec: &[u8]) -> Option<Recipe<'_>> {
    let mut r = Reader::new(rec);
    let kind = RecipeKind::from_u8(r.u8()?)?;
    r.u8()?;
    r.u32_le()?;
    let object = u64::from(r.u32_le()?);
    let object2 = u64::from(r.u32_le()?);
    let source = u64::from(r.u32_le()?);
    let mechanism = match r.u8()? {
        1 => {
            let ty = r.u64_le()?;
            let param = decode_param_from(&mut r)?;
            Some(Mechanism { ty, param })
        }
        _ => None,
    };
    let wrapped = get_bytes(&mut r)?;
    let template = decode_template(&mut r)?;
    let template2 = decode_template(&mut r)?;
    Some(Recipe {
        kind,
        object,
        object2,
        source,
        mechanism,
        wrapped,
        template,
        template2,
    })
}

/// Whether p11ha can copy `template` (no nested templates, not too many).
pub fn template_copyable(template: &[Attr<'_>]) -> bool {
    template.len() <= MAX_ATTRS && template.iter().all(|a| a.ty & attr::ARRAY_ATTRIBUTE == 0)
}

/// Encodes a template into `out`; the bytes written, or `None` if it does
/// not fit or cannot be copied.
fn encode_template(template: &[Attr<'_>], out: &mut [u8]) -> Option<usize> {
    if !template_copyable(template) {
        return None;
    }
    let mut w = Writer::new(out);
    w.u8(template.len() as u8)?;
    for a in template {
        w.u64_le(a.ty)?;
        put_bytes(&mut w, a.value)?;
    }
    Some(w.len())
}

fn decode_template<'a>(r: &mut Reader<'a>) -> Option<Vec<Attr<'a>, MAX_ATTRS>> {
    let n = r.u8()?;
    let mut out = Vec::new();
    for _ in 0..n {
        let ty = r.u64_le()?;
        let value = get_bytes(r)?;
        out.push(Attr { ty, value }).ok()?;
    }
    Some(out)
}

/// Encodes a mechanism parameter; `None` if it cannot be copied (unknown
/// layout) or does not fit.
fn encode_param(param: &Param<'_>, out: &mut [u8]) -> Option<usize> {
    let mut w = Writer::new(out);
    match *param {
        Param::None => w.u8(0)?,
        Param::Flat(b) => {
            w.u8(1)?;
            put_bytes(&mut w, b)?;
        }
        Param::Handle(h) => {
            w.u8(2)?;
            w.u64_le(h)?;
        }
        Param::Oaep {
            hash,
            mgf,
            source,
            source_data,
        } => {
            w.u8(3)?;
            w.u64_le(hash)?;
            w.u64_le(mgf)?;
            w.u64_le(source)?;
            put_bytes(&mut w, source_data)?;
        }
        Param::Ecdh1 {
            kdf,
            shared_data,
            public_data,
        } => {
            w.u8(4)?;
            w.u64_le(kdf)?;
            put_bytes(&mut w, shared_data)?;
            put_bytes(&mut w, public_data)?;
        }
        Param::Gcm {
            iv,
            iv_bits,
            aad,
            tag_bits,
        } => {
            w.u8(5)?;
            put_bytes(&mut w, iv)?;
            w.u64_le(iv_bits)?;
            put_bytes(&mut w, aad)?;
            w.u64_le(tag_bits)?;
        }
        Param::Opaque(_) => return None,
    }
    Some(w.len())
}

fn decode_param(b: &[u8]) -> Option<Param<'_>> {
    decode_param_from(&mut Reader::new(b))
}

fn decode_param_from<'a>(r: &mut Reader<'a>) -> Option<Param<'a>> {
    Some(match r.u8()? {
        0 => Param::None,
        1 => Param::Flat(get_bytes(r)?),
        2 => Param::Handle(r.u64_le()?),
        3 => Param::Oaep {
            hash: r.u64_le()?,
            mgf: r.u64_le()?,
            source: r.u64_le()?,
            source_data: get_bytes(r)?,
        },
        4 => Param::Ecdh1 {
            kdf: r.u64_le()?,
            shared_data: get_bytes(r)?,
            public_data: get_bytes(r)?,
        },
        5 => Param::Gcm {
            iv: get_bytes(r)?,
            iv_bits: r.u64_le()?,
            aad: get_bytes(r)?,
            tag_bits: r.u64_le()?,
        },
        _ => return None,
    })
}

/// Whether a parameter can be journalled.
pub fn param_copyable(param: &Param<'_>) -> bool {
    param.kind() != ParamKind::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Layout = Layout {
        recipes: 256,
        find_template: 128,
        op_param: 64,
        found: 16,
    };

    fn journal(buf: &mut [u8], limit: usize) -> Journal<&mut [u8]> {
        Journal::new(buf, SMALL, limit)
    }

    #[test]
    fn an_operation_keeps_its_parameter_and_data_up_to_the_limit() {
        let mut buf = [0xAAu8; 512];
        let mut j = journal(&mut buf, 10);
        let iv = [7u8; 16];
        let m = Mechanism {
            ty: 0x1082,
            param: Param::Flat(&iv),
        };
        assert_eq!(j.op_begin(Op::Encrypt, &m, 5), None);
        assert_eq!(j.op_mechanism(), Some(m));
        assert_eq!(j.op_update(b"0123"), None);
        assert_eq!(j.op_update(b"456789"), None);
        assert_eq!(j.op_data(), b"0123456789");
        assert_eq!(j.op_update(b"x"), Some(Lost::LimitPassed));
        assert_eq!(j.op.unwrap().lost, Some(Lost::LimitPassed));
        // Reported once.
        assert_eq!(j.op_update(b"y"), None);
        j.op_end();
        assert!(j.op.is_none());
        let opaque = Mechanism {
            ty: 0x8000_0001,
            param: Param::Opaque(&[1, 2]),
        };
        assert_eq!(
            j.op_begin(Op::Sign, &opaque, 5),
            Some(Lost::ParameterNotCopyable)
        );
        assert_eq!(
            j.op_begin(Op::Digest, &m, 0),
            Some(Lost::TwoOperations),
            "a second operation"
        );
    }

    #[test]
    fn structured_parameters_round_trip() {
        let mut buf = [0u8; 512];
        let mut j = journal(&mut buf, 100);
        let m = Mechanism {
            ty: 0x1050,
            param: Param::Ecdh1 {
                kdf: 1,
                shared_data: b"",
                public_data: &[4, 1, 2, 3],
            },
        };
        j.op_begin(Op::Sign, &m, 9);
        assert_eq!(j.op_mechanism(), Some(m));
    }

    #[test]
    fn a_search_keeps_its_template_and_results() {
        let mut buf = [0u8; 512];
        let mut j = journal(&mut buf, 0);
        let class = [3u8, 0, 0, 0, 0, 0, 0, 0];
        let t = [
            Attr {
                ty: attr::CLASS,
                value: &class,
            },
            Attr {
                ty: attr::LABEL,
                value: b"ec-key",
            },
        ];
        assert_eq!(j.find_begin(&t), None);
        assert_eq!(&j.find_template().unwrap()[..], &t[..]);
        for h in 1..=4 {
            assert_eq!(j.find_record(h), None);
        }
        assert!(j.find_returned(3) && !j.find_returned(9));
        assert_eq!(
            j.find_record(5),
            Some(Lost::FoundFull),
            "16 bytes hold 4 handles"
        );
        let nested = [Attr {
            ty: attr::WRAP_TEMPLATE,
            value: &[0; 8],
        }];
        assert_eq!(j.find_begin(&nested), Some(Lost::TemplateNotCopyable));
    }

    #[test]
    fn recipes_replay_in_order_and_forgotten_ones_are_skipped() {
        let mut buf = [0u8; 512];
        let mut j = journal(&mut buf, 0);
        let t = [Attr {
            ty: attr::LABEL,
            value: b"k",
        }];
        let keygen = Mechanism {
            ty: 0x1080,
            param: Param::None,
        };
        assert!(j.recipe(&NewRecipe::new(RecipeKind::Create, 1, &t)));
        assert!(j.recipe(&NewRecipe {
            mechanism: Some(&keygen),
            ..NewRecipe::new(RecipeKind::GenerateKey, 2, &t)
        }));
        assert!(j.recipe(&NewRecipe {
            source: 2,
            mechanism: Some(&keygen),
            wrapped: b"wrapped",
            ..NewRecipe::new(RecipeKind::Unwrap, 3, &t)
        }));
        let kinds: heapless::Vec<(RecipeKind, u64), 4> =
            j.recipes().map(|r| (r.kind, r.object)).collect();
        assert_eq!(
            &kinds[..],
            &[
                (RecipeKind::Create, 1),
                (RecipeKind::GenerateKey, 2),
                (RecipeKind::Unwrap, 3)
            ]
        );
        {
            let unwrap = j.recipes().nth(2).unwrap();
            assert_eq!((unwrap.source, unwrap.wrapped), (2, &b"wrapped"[..]));
            assert_eq!(&unwrap.template[..], &t[..]);
        }
        j.forget_object(2);
        assert_eq!(j.recipes().count(), 2);
        // Fill the region: the recipe that does not fit is refused.
        let big = [0u8; 200];
        let t = [Attr {
            ty: attr::VALUE,
            value: &big,
        }];
        assert!(!j.recipe(&NewRecipe::new(RecipeKind::Create, 4, &t)));
        assert_eq!(j.recipes().count(), 2);
    }

    #[test]
    fn an_empty_buffer_keeps_nothing() {
        let mut buf = [0u8; 0];
        let mut j = journal(&mut buf, 1000);
        assert_eq!(j.limit(), 0);
        let m = Mechanism {
            ty: 1,
            param: Param::Flat(&[1]),
        };
        assert_eq!(
            j.op_begin(Op::Sign, &m, 1),
            Some(Lost::ParameterNotCopyable)
        );
        assert!(!j.recipe(&NewRecipe::new(RecipeKind::Create, 1, &[])));
    }
}
