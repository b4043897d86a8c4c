//! HA mode over remote members: three real `p11-kit server` processes,
//! each serving its own copy of the same SoftHSM token on a Unix socket,
//! reached through p11ha's own RPC client (no module is loaded). Servers
//! are killed with SIGKILL (the whole process group: the server and the
//! `p11-kit-remote` it forked for p11ha's connection) in the middle of
//! what the application is doing; the application must see no error and
//! the right output. Member `i` is server `i` (servers join in the order of
//! `ET_HSM_NETCLIENT_SERVERLIST`, one token each).
//!
//! The tests share one library and run one at a time; each starts with
//! every server running and every member in service (failed members are
//! reconnected 200 ms after they fail).

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectClass;
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use p11ha_tests::ha::{failure_line, log_lines, members, recovered_line, wait_for};
use p11ha_tests::remote::{self, with_server};
use p11ha_tests::*;

fn lib() -> &'static Library {
    remote::start(3, 200, &[])
}

/// Every server running and every member back in service.
fn restore_all() {
    for i in 0..3 {
        with_server(i, |s| s.start());
    }
    wait_for("every member back", || {
        (0..members()).all(|i| member_info(i).is_some_and(|m| m.up == 1))
    });
}

fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    let g = M.lock().unwrap_or_else(|e| e.into_inner());
    lib();
    restore_all();
    g
}

/// kill -9 of the server behind `s`'s member; that member.
fn kill_server_of(s: &Session) -> usize {
    let m = session_member(s);
    with_server(m, |server| server.kill());
    m
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 13 + i / 5) as u8).collect()
}

fn moved(s: &Session, from: usize) {
    assert_ne!(session_member(s), from, "the session failed over");
    assert!(
        log_lines().contains(&failure_line(from)),
        "the HA log has {}: {:#?}",
        failure_line(from),
        log_lines()
    );
}

#[test]
fn members_are_the_servers_in_list_order() {
    let _g = serial();
    assert_eq!(members(), 3);
    for i in 0..3 {
        let info = member_info(i).unwrap();
        assert_eq!((info.slot, info.up), (0, 1), "member {i}");
    }
    // Sessions spread over the three servers.
    let l = lib();
    let sessions: Vec<_> = (0..3).map(|_| l.session()).collect();
    let on: BTreeSet<_> = sessions.iter().map(session_member).collect();
    assert_eq!(on.len(), 3);
}

#[test]
fn a_multipart_digest_survives_its_server_killed() {
    let _g = serial();
    let s = lib().user_session();
    let data = pattern(30_000);
    s.digest_init(&Mechanism::Sha256).unwrap();
    s.digest_update(&data[..10_000]).unwrap();
    let m = kill_server_of(&s);
    s.digest_update(&data[10_000..20_000]).unwrap();
    s.digest_update(&data[20_000..]).unwrap();
    assert_eq!(s.digest_final().unwrap(), sha256(&data));
    moved(&s, m);
}

#[test]
fn a_multipart_aes_cbc_encryption_survives_its_server_killed() {
    let _g = serial();
    let l = lib();
    let s = l.user_session();
    let key = find_one(&s, ObjectClass::SECRET_KEY, "aes-key");
    let iv = [9u8; 16];
    let data = pattern(4096);
    let reference = openssl_aes_256_cbc(&l.tokens.keys, &iv, false, &data);
    for kill_after in 0..3 {
        restore_all();
        s.encrypt_init(&Mechanism::AesCbc(iv), key).unwrap();
        let mut out = Vec::new();
        let mut m = None;
        for (i, part) in data.chunks(1024).enumerate() {
            if i == kill_after + 1 {
                m = Some(kill_server_of(&s));
            }
            out.extend(s.encrypt_update(part).unwrap());
        }
        out.extend(s.encrypt_final().unwrap());
        assert_eq!(out, reference, "server killed after {kill_after} parts");
        moved(&s, m.unwrap());
    }
}

#[test]
fn an_ecdsa_sign_loop_survives_its_server_killed() {
    let _g = serial();
    let l = lib();
    let s = l.user_session();
    let key = find_one(&s, ObjectClass::PRIVATE_KEY, "ec-key");
    let mut m = None;
    for i in 0..40u32 {
        if i == 15 {
            m = Some(kill_server_of(&s));
        }
        let data = format!("message {i}");
        let signature = s
            .sign(&Mechanism::Ecdsa, key, &sha256(data.as_bytes()))
            .unwrap();
        assert!(
            openssl_verifies(
                &l.tokens.keys.join("ec-pub.pem"),
                data.as_bytes(),
                &ecdsa_der(&signature)
            ),
            "signature {i} verifies"
        );
    }
    moved(&s, m.unwrap());
}

fn find_all(s: &Session, first: Vec<u64>) -> Vec<u64> {
    let mut got = first;
    loop {
        let batch = find_batch(s, 2);
        if batch.is_empty() {
            break;
        }
        got.extend(batch);
    }
    // SAFETY: a session handle.
    assert_eq!(unsafe { raw().C_FindObjectsFinal.unwrap()(s.handle()) }, 0);
    got
}

fn find_init(s: &Session) {
    // SAFETY: a NULL template of length 0 is valid.
    let rv = unsafe { raw().C_FindObjectsInit.unwrap()(s.handle(), std::ptr::null_mut(), 0) };
    assert_eq!(rv, 0, "C_FindObjectsInit");
}

#[test]
fn a_search_survives_its_server_killed() {
    let _g = serial();
    let s = lib().user_session();
    find_init(&s);
    let reference = find_all(&s, Vec::new());
    assert_eq!(reference.len(), 5, "five token objects");
    find_init(&s);
    let first = find_batch(&s, 2);
    let m = kill_server_of(&s);
    let got = find_all(&s, first);
    let set: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(set.len(), got.len(), "no handle twice");
    assert_eq!(set, reference.into_iter().collect(), "none skipped");
    moved(&s, m);
}

#[test]
fn a_restarted_server_is_recovered_and_takes_sessions_again() {
    let _g = serial();
    let l = lib();
    let s = l.user_session();
    let m = kill_server_of(&s);
    s.get_session_info().expect("the session fails over");
    assert_eq!(member_info(m).unwrap().up, 0);
    // While the server is down, recovery attempts fail quietly.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(member_info(m).unwrap().up, 0, "not back while down");
    with_server(m, |server| server.start());
    wait_for("the member reconnected", || member_info(m).unwrap().up == 1);
    let lines = log_lines();
    assert!(lines.contains(&recovered_line(m)), "{lines:#?}");
    // New sessions go to it again, logged in (a new connection, a new
    // login), and it signs.
    let sessions: Vec<_> = (0..3).map(|_| l.session()).collect();
    let on_m: Vec<_> = sessions.iter().filter(|s| session_member(s) == m).collect();
    // (The least loaded member takes a new session: it, at least once.)
    assert!(!on_m.is_empty(), "new sessions on it");
    let key = find_one(on_m[0], ObjectClass::PRIVATE_KEY, "ec-key");
    let sig = on_m[0]
        .sign(&Mechanism::Ecdsa, key, &sha256(b"back"))
        .unwrap();
    assert_eq!(session_member(on_m[0]), m, "served by the recovered member");
    assert!(openssl_verifies(
        &l.tokens.keys.join("ec-pub.pem"),
        b"back",
        &ecdsa_der(&sig)
    ));
}

fn rv<T: std::fmt::Debug>(r: Result<T, Error>) -> RvError {
    match r {
        Err(Error::Pkcs11(rv, _)) => rv,
        r => panic!("expected a PKCS#11 error, got {r:?}"),
    }
}

#[test]
fn all_servers_down_then_one_back() {
    let _g = serial();
    let l = lib();
    let s = l.user_session();
    let key = find_one(&s, ObjectClass::PRIVATE_KEY, "ec-key");
    let slot = l.slot();
    for i in 0..3 {
        with_server(i, |server| server.kill());
    }
    // Clear errors, at once: the session's call, and a new session.
    let t = std::time::Instant::now();
    assert_eq!(
        rv(s.sign(&Mechanism::Ecdsa, key, &sha256(b"x"))),
        RvError::DeviceError
    );
    assert_eq!(rv(l.pkcs11.open_rw_session(slot)), RvError::TokenNotPresent);
    // The slot stays, without a token.
    assert_eq!(l.pkcs11.get_slots_with_token().unwrap().len(), 0);
    assert_eq!(l.pkcs11.get_all_slots().unwrap(), vec![slot]);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "errors come at once, not after a wait: {:?}",
        t.elapsed()
    );
    assert!((0..3).all(|i| member_info(i).unwrap().up == 0));
    // One server back: service resumes without C_Finalize/C_Initialize.
    with_server(1, |server| server.start());
    wait_for("member 1 reconnected", || member_info(1).unwrap().up == 1);
    // The old session is served again, still logged in, its key handle
    // still valid.
    let sig = s.sign(&Mechanism::Ecdsa, key, &sha256(b"y")).unwrap();
    assert_eq!(session_member(&s), 1);
    assert!(openssl_verifies(
        &l.tokens.keys.join("ec-pub.pem"),
        b"y",
        &ecdsa_der(&sig)
    ));
    // And new sessions open, and log in.
    let n = l.session();
    match n.login(UserType::User, Some(&AuthPin::new(USER_PIN.into()))) {
        Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("login: {e}"),
    }
    assert_eq!(session_member(&n), 1);
}

/// Length queries that p11ha answers without a round trip (a digest's
/// length, AES bounds, a signature length learned from the server) leave
/// the operation exactly as the server has it: still active, and the
/// output right.
#[test]
fn length_queries_answered_locally_keep_the_operation() {
    let _g = serial();
    let l = lib();
    let s = l.user_session();
    let raw = raw();
    let h = s.handle();
    let key = find_one(&s, ObjectClass::PRIVATE_KEY, "ec-key");
    let digest = sha256(b"length");
    let mut mech = cryptoki_sys::CK_MECHANISM {
        mechanism: cryptoki_sys::CKM_ECDSA,
        pParameter: std::ptr::null_mut(),
        ulParameterLen: 0,
    };
    for round in 0..3 {
        // SAFETY: valid session, mechanism, key and buffers below.
        unsafe {
            assert_eq!(raw.C_SignInit.unwrap()(h, &mut mech, key.handle()), 0);
            let mut len: cryptoki_sys::CK_ULONG = 0;
            let rv = raw.C_Sign.unwrap()(
                h,
                digest.as_ptr() as *mut _,
                32,
                std::ptr::null_mut(),
                &mut len,
            );
            assert_eq!((rv, len), (0, 64), "round {round}: the length");
            // The operation is still active on the server.
            assert_eq!(
                raw.C_SignInit.unwrap()(h, &mut mech, key.handle()),
                cryptoki_sys::CKR_OPERATION_ACTIVE,
                "round {round}"
            );
            let mut sig = [0u8; 64];
            let rv =
                raw.C_Sign.unwrap()(h, digest.as_ptr() as *mut _, 32, sig.as_mut_ptr(), &mut len);
            assert_eq!((rv, len), (0, 64), "round {round}: the signature");
            assert!(openssl_verifies(
                &l.tokens.keys.join("ec-pub.pem"),
                b"length",
                &ecdsa_der(&sig)
            ));
            // Ended: a length query now is the server's answer.
            let rv = raw.C_Sign.unwrap()(
                h,
                digest.as_ptr() as *mut _,
                32,
                std::ptr::null_mut(),
                &mut len,
            );
            assert_eq!(rv, cryptoki_sys::CKR_OPERATION_NOT_INITIALIZED);
        }
    }
    // Single-part digest and AES-CBC-PAD through the cryptoki crate (each a
    // length query, then the call).
    let data = pattern(1000);
    assert_eq!(s.digest(&Mechanism::Sha256, &data).unwrap(), sha256(&data));
    let aes = find_one(&s, ObjectClass::SECRET_KEY, "aes-key");
    for n in [0, 1, 15, 16, 17, 1000] {
        let ct = s
            .encrypt(&Mechanism::AesCbcPad([3; 16]), aes, &data[..n])
            .unwrap();
        let reference = openssl_aes_256_cbc(&l.tokens.keys, &[3; 16], true, &data[..n]);
        assert_eq!(ct, reference, "{n} bytes");
        let pt = s.decrypt(&Mechanism::AesCbcPad([3; 16]), aes, &ct).unwrap();
        assert_eq!(pt, &data[..n], "{n} bytes back");
    }
}

/// Session objects are the application's, not one session's (PKCS#11 v2.40
/// §4.4): made in one session, used in sessions on other servers, they
/// live on one server, the slot's home. Its server is killed: the object
/// the journal can make again is made again on the next home, for every
/// session; the generated key that was used cannot be, and says so.
#[test]
fn session_objects_outlive_their_servers_kill_for_every_session() {
    use cryptoki::object::{Attribute, KeyType};
    let _g = serial();
    let l = lib();
    let _login = l.user_session();
    let mut s: Vec<Session> = Vec::new();
    while s.len() < 3 {
        let t = l.session();
        if s.iter().all(|o| session_member(o) != session_member(&t)) {
            s.push(t);
        }
    }
    let value = pattern(32);
    let key = s[0]
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(value.clone()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
        ])
        .unwrap();
    let random = s[0]
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
            ],
        )
        .unwrap();
    let iv = [3u8; 16];
    let data = pattern(64);
    let ct = s[1].encrypt(&Mechanism::AesCbc(iv), key, &data).unwrap();
    s[1].encrypt(&Mechanism::AesCbc(iv), random, &data).unwrap();
    let home = session_member(&s[0]);
    assert_eq!(session_member(&s[1]), home, "moved to the objects");
    with_server(home, |server| server.kill());
    // The third session, on another server, needs the key first: its maker
    // fails over now and makes it again; the same key, the same output.
    assert_eq!(
        s[2].decrypt(&Mechanism::AesCbc(iv), key, &ct).unwrap(),
        data
    );
    let new_home = session_member(&s[0]);
    assert_ne!(new_home, home);
    assert_eq!(session_member(&s[2]), new_home);
    assert_eq!(
        s[1].encrypt(&Mechanism::AesCbc(iv), key, &data).unwrap(),
        ct
    );
    assert_eq!(
        rv(s[1].encrypt(&Mechanism::AesCbc(iv), random, &data)),
        RvError::KeyHandleInvalid
    );
    let lines = log_lines();
    assert!(lines.contains(&failure_line(home)), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Session recovery incomplete: a session object")),
        "{lines:#?}"
    );
}

/// Several sessions share each server's connection, so their calls are in
/// flight on it together (adapters/src/rpc/conn.rs): each thread must get
/// its own digests, before and after the server it shares is killed in
/// the middle of their calls, and those in flight on the killed
/// connection fail over, none lost.
#[test]
fn threads_sharing_a_connection_get_their_own_answers_across_its_kill() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const THREADS: usize = 8;
    const ROUNDS: usize = 300;
    let _g = serial();
    let l = lib();
    let sessions: Vec<Session> = (0..THREADS).map(|_| l.user_session()).collect();
    let first: Vec<usize> = sessions.iter().map(session_member).collect();
    let victim = first[0];
    assert!(
        first.iter().filter(|&&m| m == victim).count() >= 2,
        "two or more sessions share server {victim}'s connection: {first:?}"
    );
    let done = AtomicUsize::new(0);
    let sessions = std::thread::scope(|scope| {
        let threads: Vec<_> = sessions
            .into_iter()
            .enumerate()
            .map(|(t, s)| {
                let done = &done;
                scope.spawn(move || {
                    for i in 0..ROUNDS {
                        let data = format!("thread {t} round {i} ").repeat(40);
                        let data = data.as_bytes();
                        s.digest_init(&Mechanism::Sha256).unwrap();
                        s.digest_update(&data[..100]).unwrap();
                        s.digest_update(&data[100..]).unwrap();
                        let digest = s.digest_final().unwrap();
                        assert_eq!(digest, sha256(data), "thread {t}, round {i}");
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    s
                })
            })
            .collect();
        // Killed while every thread is busy (none can have finished).
        while done.load(Ordering::Relaxed) < 5 * THREADS {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        with_server(victim, |server| server.kill());
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(done.load(Ordering::Relaxed), THREADS * ROUNDS);
    for (s, &m) in sessions.iter().zip(&first) {
        if m == victim {
            moved(s, victim);
        }
    }
}
