//! `p11ha check`: the token objects of every slot's members compared, by
//! identity (class, `CKA_ID`, `CKA_LABEL`, key type: how the library finds
//! an object again on another member) and by public attributes. Sensitive
//! values are never asked for.

use std::collections::BTreeMap;

use libp11ha::config::HostConfig;
use p11ha_core::ck::{attr, class, flags, user};
use p11ha_core::port::{Attr, AttrOut, Member as _};

use crate::json;
use crate::members::{Member, Members, error_text, text};
use crate::pin::Pin;
use crate::status;

/// Finds every object matching `template` in `session`.
pub fn find(member: &Member, session: u64, template: &[Attr<'_>]) -> Result<Vec<u64>, String> {
    member
        .find_init(session, template)
        .map_err(|e| format!("C_FindObjectsInit {}", error_text(e)))?;
    let mut all = Vec::new();
    let mut batch = [0u64; 64];
    let r = loop {
        match member.find(session, &mut batch) {
            Ok(0) => break Ok(all),
            Ok(n) => all.extend_from_slice(&batch[..n]),
            Err(e) => break Err(format!("C_FindObjects {}", error_text(e))),
        }
    };
    let _ = member.find_final(session);
    r
}

/// One attribute's value, or `None` if the object has none the token
/// shows (absent, sensitive, or any error).
pub fn get(member: &Member, session: u64, object: u64, ty: u64) -> Option<Vec<u8>> {
    let mut t = [AttrOut {
        ty,
        buf: None,
        len: None,
    }];
    member.get_attributes(session, object, &mut t).ok()?;
    let mut value = vec![0u8; t[0].len?];
    let mut t = [AttrOut {
        ty,
        buf: Some(&mut value),
        len: None,
    }];
    member.get_attributes(session, object, &mut t).ok()?;
    let n = t[0].len?;
    value.truncate(n);
    Some(value)
}

/// How objects are told apart: what the library matches on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Identity {
    class: u64,
    id: Vec<u8>,
    label: Vec<u8>,
    key_type: Option<u64>,
}

impl Identity {
    fn describe(&self) -> String {
        let class = match self.class {
            class::DATA => "data".to_string(),
            class::CERTIFICATE => "certificate".into(),
            class::PUBLIC_KEY => "public key".into(),
            class::PRIVATE_KEY => "private key".into(),
            class::SECRET_KEY => "secret key".into(),
            c => format!("class {c:#x}"),
        };
        let id: String = self.id.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{class} label \"{}\" id {}",
            text(&self.label),
            if id.is_empty() { "-" } else { &id }
        )
    }
}

/// The public attributes compared, by class; never a secret's value.
fn public_attributes(cls: u64) -> &'static [u64] {
    match cls {
        class::DATA | class::CERTIFICATE => &[attr::VALUE],
        class::PUBLIC_KEY => &[
            attr::EC_PARAMS,
            attr::EC_POINT,
            attr::MODULUS,
            attr::PUBLIC_EXPONENT,
        ],
        class::PRIVATE_KEY => &[attr::EC_PARAMS, attr::MODULUS, attr::PUBLIC_EXPONENT],
        class::SECRET_KEY => &[attr::VALUE_LEN],
        _ => &[],
    }
}

/// The public attribute values of one object.
type Publics = Vec<Option<Vec<u8>>>;

/// The token objects of one member, by identity.
fn inventory(
    member: &Member,
    pin: Option<&Pin>,
) -> Result<BTreeMap<Identity, Vec<Publics>>, String> {
    let session = member
        .open_session(flags::SERIAL_SESSION)
        .map_err(|e| format!("C_OpenSession {}", error_text(e)))?;
    let r = (|| {
        if let Some(pin) = pin {
            member
                .login(session, user::USER, Some(pin.bytes()))
                .map_err(|e| format!("C_Login {}", error_text(e)))?;
        }
        let yes = [1u8];
        let objects = find(
            member,
            session,
            &[Attr {
                ty: attr::TOKEN,
                value: &yes,
            }],
        )?;
        let mut all: BTreeMap<Identity, Vec<Publics>> = BTreeMap::new();
        for o in objects {
            let ulong = |ty| {
                get(member, session, o, ty).and_then(|v| v.try_into().ok().map(u64::from_ne_bytes))
            };
            let Some(cls) = ulong(attr::CLASS) else {
                continue;
            };
            let key = matches!(
                cls,
                class::PUBLIC_KEY | class::PRIVATE_KEY | class::SECRET_KEY
            );
            let identity = Identity {
                class: cls,
                id: get(member, session, o, attr::ID).unwrap_or_default(),
                label: get(member, session, o, attr::LABEL).unwrap_or_default(),
                key_type: if key { ulong(attr::KEY_TYPE) } else { None },
            };
            let publics = public_attributes(cls)
                .iter()
                .map(|&ty| get(member, session, o, ty))
                .collect();
            all.entry(identity).or_default().push(publics);
        }
        for v in all.values_mut() {
            v.sort();
        }
        Ok(all)
    })();
    if pin.is_some() {
        let _ = member.logout(session);
    }
    let _ = member.close_session(session);
    r
}

/// Compares every slot's members; 1 on drift or a member not compared.
/// `json`: one JSON object instead of the text.
pub fn run(cfg: &HostConfig, m: &Members, pin: Option<&Pin>, json_out: bool) -> i32 {
    let mut bad = false;
    let mut text_out = String::new();
    let mut say = |line: String| {
        text_out.push_str(&line);
        text_out.push('\n');
    };
    let mut slots_json = Vec::new();
    if pin.is_none() {
        say("no PIN: public objects only".into());
    }
    for v in status::slots(cfg, m) {
        let label = v
            .label
            .as_ref()
            .map(|l| format!(" \"{l}\""))
            .unwrap_or_default();
        say(format!("slot {}{label}:", v.id));
        let mut seen = Vec::new();
        let mut not_compared = Vec::new();
        for &i in &v.members {
            let f = &m.found[i];
            let idx = f.index.unwrap_or(i);
            let inv = match (&f.member, &f.token) {
                (Some(member), Ok(_)) => inventory(member, pin),
                (_, Err(e)) => Err(e.clone()),
                (None, Ok(_)) => Err("not reached".into()),
            };
            match inv {
                Ok(inv) => seen.push((idx, inv)),
                Err(e) => {
                    bad = true;
                    say(format!(
                        "  hsmIdx {idx} ({}): not compared: {e}",
                        f.place.describe()
                    ));
                    not_compared.push(json::object(&[
                        ("index", idx.to_string()),
                        ("where", json::string(&f.place.describe())),
                        ("error", json::string(&e)),
                    ]));
                }
            }
        }
        let compared: Vec<String> = seen.iter().map(|(i, _)| i.to_string()).collect();
        let mut objects = Vec::new();
        let mut drift = 0;
        if seen.len() < 2 {
            say(format!(
                "  {} member(s) compared: nothing to compare",
                seen.len()
            ));
        } else {
            let mut identities: Vec<&Identity> =
                seen.iter().flat_map(|(_, inv)| inv.keys()).collect();
            identities.sort();
            identities.dedup();
            for id in identities {
                let missing: Vec<usize> = seen
                    .iter()
                    .filter(|(_, inv)| !inv.contains_key(id))
                    .map(|(i, _)| *i)
                    .collect();
                let values: Vec<(usize, &Vec<Publics>)> = seen
                    .iter()
                    .filter_map(|(i, inv)| inv.get(id).map(|p| (*i, p)))
                    .collect();
                let reference = values[0].1;
                let differs: Vec<usize> = values
                    .iter()
                    .filter(|(_, p)| *p != reference)
                    .map(|(i, _)| *i)
                    .collect();
                let list = |v: &[usize]| {
                    v.iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let verdict = if missing.is_empty() && differs.is_empty() {
                    "present on every member".to_string()
                } else {
                    drift += 1;
                    let mut parts = Vec::new();
                    if !missing.is_empty() {
                        parts.push(format!("MISSING on hsmIdx {}", list(&missing)));
                    }
                    if !differs.is_empty() {
                        parts.push(format!(
                            "DIFFERS on hsmIdx {} (from hsmIdx {})",
                            list(&differs),
                            values[0].0
                        ));
                    }
                    parts.join("; ")
                };
                say(format!("  {}: {verdict}", id.describe()));
                let ints = |v: &[usize]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>();
                objects.push(json::object(&[
                    ("object", json::string(&id.describe())),
                    ("missing_on", json::array(&ints(&missing))),
                    ("differs_on", json::array(&ints(&differs))),
                ]));
            }
            if drift > 0 {
                bad = true;
                say(format!("  drift: {drift} object(s)"));
            } else {
                say("  no drift".into());
            }
        }
        slots_json.push(json::object(&[
            ("slot", v.id.to_string()),
            ("label", json::opt_string(v.label.as_deref())),
            ("compared", json::array(&compared)),
            ("not_compared", json::array(&not_compared)),
            ("objects", json::array(&objects)),
            ("drift", drift.to_string()),
        ]));
    }
    // A member not reached has no known slot; whatever it holds was not
    // compared, so the check cannot say there is no drift.
    let mut not_reached = Vec::new();
    for f in m.found.iter().filter(|f| f.slot.is_none() && !f.up()) {
        bad = true;
        if let Err(e) = &f.token {
            say(format!(
                "not reached, not compared: {}: {e}",
                f.place.describe()
            ));
            not_reached.push(json::object(&[
                ("where", json::string(&f.place.describe())),
                ("error", json::string(e)),
            ]));
        }
    }
    let code = i32::from(bad);
    if json_out {
        println!(
            "{}",
            json::object(&[
                ("private_objects", pin.is_some().to_string()),
                ("slots", json::array(&slots_json)),
                ("not_reached", json::array(&not_reached)),
                ("ok", (code == 0).to_string()),
                ("exit_status", code.to_string()),
            ])
        );
    } else {
        print!("{text_out}");
    }
    code
}
