//! `p11ha selftest`: on every member, a session, a user login, and a
//! signature made and verified with a named key pair.

use libp11ha::config::HostConfig;
use p11ha_core::ck::{attr, class, flags, mech, user};
use p11ha_core::port::{Attr, Mechanism, Member as _, Op, Param};

use crate::check::{find, get};
use crate::json;
use crate::members::{Member, Members, error_text};
use crate::pin::Pin;

const CKK_RSA: u64 = 0;
const CKK_EC: u64 = 3;

/// Runs the test on every member, and on every member not reached (which
/// fails: p11ha cannot tell its slot); 1 if any failed. A token no slot
/// names (such as SoftHSM's spare uninitialised slot) is not a member.
/// `json`: one JSON object instead of the text.
pub fn run(_cfg: &HostConfig, m: &Members, pin: &Pin, key: &str, json_out: bool) -> i32 {
    let mut failed = 0;
    let mut tested = 0;
    let mut lines = String::new();
    let mut rows = Vec::new();
    for f in m.found.iter().filter(|f| f.index.is_some() || !f.up()) {
        tested += 1;
        let idx = f.index.map_or("-".into(), |i| i.to_string());
        let outcome = match (&f.member, &f.token) {
            (Some(_), Ok((info, _))) if info.flags & flags::TOKEN_INITIALIZED == 0 => {
                tested -= 1;
                Ok(None)
            }
            (Some(member), Ok(_)) => test(member, pin, key).map(Some),
            (_, Err(e)) => Err(format!("not reached: {e}")),
            (None, Ok(_)) => Err("not reached".into()),
        };
        let (verdict, detail) = match outcome {
            Ok(None) => ("skipped", "the token is not initialised".to_string()),
            Ok(Some(what)) => ("ok", what),
            Err(e) => {
                failed += 1;
                ("FAILED", e)
            }
        };
        let sep = if verdict == "skipped" { " " } else { ": " };
        let shown = if verdict == "skipped" {
            "skipped:"
        } else {
            verdict
        };
        lines.push_str(&format!(
            "hsmIdx {idx:<3} {:<44} {shown}{sep}{detail}\n",
            f.place.describe()
        ));
        rows.push(json::object(&[
            ("index", json::opt(f.index)),
            ("where", json::string(&f.place.describe())),
            ("outcome", json::string(&verdict.to_lowercase())),
            ("detail", json::string(&detail)),
        ]));
    }
    let code = i32::from(failed > 0);
    if json_out {
        println!(
            "{}",
            json::object(&[
                ("key", json::string(key)),
                ("members", json::array(&rows)),
                ("tested", tested.to_string()),
                ("passed", (tested - failed).to_string()),
                ("ok", (code == 0).to_string()),
                ("exit_status", code.to_string()),
            ])
        );
    } else {
        print!("{lines}");
        println!("{} of {tested} members passed", tested - failed);
    }
    code
}

fn test(member: &Member, pin: &Pin, key: &str) -> Result<String, String> {
    let session = member
        .open_session(flags::SERIAL_SESSION)
        .map_err(|e| format!("C_OpenSession {}", error_text(e)))?;
    let r = signed(member, session, pin, key);
    let _ = member.logout(session);
    let _ = member.close_session(session);
    r
}

fn signed(member: &Member, session: u64, pin: &Pin, key: &str) -> Result<String, String> {
    member
        .login(session, user::USER, Some(pin.bytes()))
        .map_err(|e| format!("C_Login {}", error_text(e)))?;
    let one = |cls: u64| -> Result<u64, String> {
        let c = cls.to_ne_bytes();
        let template = [
            Attr {
                ty: attr::CLASS,
                value: &c,
            },
            Attr {
                ty: attr::LABEL,
                value: key.as_bytes(),
            },
        ];
        let found = find(member, session, &template)?;
        match found.as_slice() {
            [h] => Ok(*h),
            [] => Err(format!(
                "no {} key labelled \"{key}\"",
                if cls == class::PRIVATE_KEY {
                    "private"
                } else {
                    "public"
                }
            )),
            _ => Err(format!("{} keys labelled \"{key}\"", found.len())),
        }
    };
    let private = one(class::PRIVATE_KEY)?;
    let public = one(class::PUBLIC_KEY)?;
    let key_type = get(member, session, private, attr::KEY_TYPE)
        .and_then(|v| v.try_into().ok().map(u64::from_ne_bytes));
    let (mechanism, name) = match key_type {
        Some(CKK_EC) => (mech::ECDSA, "ECDSA"),
        Some(CKK_RSA) => (mech::SHA256_RSA_PKCS, "SHA256-RSA-PKCS"),
        _ => return Err(format!("\"{key}\" is neither an EC nor an RSA key")),
    };
    let m = Mechanism {
        ty: mechanism,
        param: Param::None,
    };
    // 32 bytes: a SHA-256 digest's length, as raw ECDSA expects.
    let data = *b"p11ha selftest: sign and verify.";
    member
        .op_init(session, Op::Sign, &m, private)
        .map_err(|e| format!("C_SignInit {}", error_text(e)))?;
    let mut sig = [0u8; 1024];
    let n = member
        .op_single(session, Op::Sign, &data, Some(&mut sig))
        .map_err(|e| format!("C_Sign {}", error_text(e)))?;
    member
        .op_init(session, Op::Verify, &m, public)
        .map_err(|e| format!("C_VerifyInit {}", error_text(e)))?;
    member
        .verify(session, &data, &sig[..n])
        .map_err(|e| format!("C_Verify {}", error_text(e)))?;
    Ok(format!(
        "logged in, signed and verified with \"{key}\" ({name})"
    ))
}
