//! A call on one session never waits behind a slow call on another session:
//! while one thread generates an RSA-4096 key pair (seconds in SoftHSM),
//! another thread's session info queries, digests and signatures on its own
//! session all complete.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use p11ha_tests::*;

#[test]
fn a_slow_call_on_one_session_does_not_hold_up_another() {
    let l = Library::start(
        1,
        &[
            ("ET_PTKC_GENERAL_LIBRARY_MODE", "WLD"),
            ("ET_PTKC_WLD_SLOT_0", LABEL),
        ],
    );
    let login = l.user_session();
    let slow_done = Arc::new(AtomicBool::new(false));
    let slow_started = Arc::new(AtomicBool::new(false));
    let slow = {
        let (done, started) = (slow_done.clone(), slow_started.clone());
        std::thread::spawn(move || {
            let s = Library::start(1, &[]).session();
            started.store(true, Ordering::SeqCst);
            s.generate_key_pair(
                &Mechanism::RsaPkcsKeyPairGen,
                &[
                    Attribute::ModulusBits(4096.into()),
                    Attribute::PublicExponent(vec![1, 0, 1]),
                ],
                &[Attribute::Sign(true)],
            )
            .expect("RSA-4096 key pair");
            done.store(true, Ordering::SeqCst);
        })
    };
    while !slow_started.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    // Give the slow call time to be inside the member.
    std::thread::sleep(Duration::from_millis(50));
    let key = find_one(&login, ObjectClass::PRIVATE_KEY, "ec-key");
    for i in 0..20 {
        login.get_session_info().expect("session info");
        let d = sha256(&[i as u8]);
        login.sign(&Mechanism::Ecdsa, key, &d).expect("sign");
    }
    assert!(
        !slow_done.load(Ordering::SeqCst),
        "the key generation finished first, so this run shows nothing; \
         it takes seconds in SoftHSM"
    );
    slow.join().expect("slow thread");
    assert!(slow_done.load(Ordering::SeqCst));
}
