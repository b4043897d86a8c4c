//! The demonstration `scripts/demo.sh` runs: an application that loads
//! `libp11ha.so` in WLD mode over local SoftHSM tokens, shows the one
//! virtual slot, spreads sessions over the members, logs in once, and signs
//! on every member with a key handle found on one of them. The signatures
//! are checked by openssl against the public key that was provisioned.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectClass;
use cryptoki::session::Session;
use p11ha_tests::*;

fn main() {
    let l = Library::start(
        3,
        &[
            ("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD"),
            ("ET_PTKC_WLD_SLOT_0", LABEL),
        ],
    );
    println!("libp11ha.so: {}", lib_path().display());
    println!("members: SoftHSM tokens in {}", l.tokens.dir.display());
    for slot in l.pkcs11.get_all_slots().expect("slots") {
        let info = l.pkcs11.get_slot_info(slot).expect("slot info");
        let token = l.pkcs11.get_token_info(slot).expect("token info");
        println!(
            "slot {}: {} / token {:?} serial {:?}",
            slot.id(),
            info.slot_description(),
            token.label(),
            token.serial_number()
        );
    }
    let mut index = 0;
    while let Some(m) = member_info(index) {
        println!(
            "  member {index}: SoftHSM slot {:#x}, serves slot {}",
            m.member_slot, m.slot
        );
        index += 1;
    }
    let sessions: Vec<Session> = (0..6).map(|_| l.session()).collect();
    for (i, s) in sessions.iter().enumerate() {
        println!(
            "session {i} (handle {}) is on member {}",
            s.handle(),
            session_member(s)
        );
    }
    let login = l.user_session();
    let key = find_one(&login, ObjectClass::PRIVATE_KEY, "rsa-key");
    let data = b"p11ha demo: one key, three HSMs";
    let mut all_ok = true;
    for (i, s) in sessions.iter().enumerate().take(3) {
        let sig = s.sign(&Mechanism::Sha256RsaPkcs, key, data).expect("sign");
        let ok = openssl_verifies(&l.tokens.keys.join("rsa-pub.pem"), data, &sig);
        all_ok &= ok;
        println!(
            "session {i} on member {}: RSA-2048 SHA-256 signature {} by openssl",
            session_member(s),
            if ok { "verified" } else { "NOT verified" }
        );
    }
    if !all_ok {
        std::process::exit(1);
    }
    println!("demo: every signature verified");
}
