//! The library's life cycle as an application lives it: after `C_Finalize`
//! nothing of p11ha keeps running (no thread), nothing it opened stays open
//! (no descriptor: the HA log, the connections to remote members; the
//! modules it initialised are finalised), no member session is left behind,
//! and the application may `dlclose` the library and go on; a child made by
//! `fork()` calls `C_Initialize` and uses the library without deadlock.
//!
//! The library is loaded with `dlopen` directly (not through the `cryptoki`
//! crate's cached context) so that it can be closed. A PKCS#11 library is a
//! per-process singleton and threads and descriptors are counted per
//! process, so each test re-runs this test binary for itself alone
//! ([`in_own_process`]).
//!
//! Fork: PKCS#11 (v2.40 §6.6.1, "Applications and processes") says the
//! child of a Cryptoki application is not one until it calls `C_Initialize`
//! itself, and leaves its calls before that undefined ("ideally"
//! `CKR_CRYPTOKI_NOT_INITIALIZED`). p11ha chooses the ideal: in the child,
//! calls answer `CKR_CRYPTOKI_NOT_INITIALIZED` until `C_Initialize`, which
//! answers `CKR_OK` with a runtime of the child's own (modules initialised
//! again, connections of its own, a login of its own), never
//! `CKR_CRYPTOKI_ALREADY_INITIALIZED` with the parent's state, whose locks
//! may be held by parent threads that do not exist in the child and whose
//! connections the parent still uses.

use std::collections::BTreeMap;
use std::ffi::{CString, c_void};
use std::io::Read;
use std::os::fd::FromRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cryptoki_sys::*;
use p11ha_tests::remote::{Server, serve};
use p11ha_tests::*;

/// Runs `body` in a process of its own: this test binary, run again for
/// the test `name` alone, with `LIFECYCLE_TEST_ONLY=name` set, is the one
/// that runs it.
fn in_own_process(name: &str, body: impl FnOnce()) {
    const VAR: &str = "LIFECYCLE_TEST_ONLY";
    if std::env::var(VAR).is_ok_and(|v| v == name) {
        body();
        return;
    }
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(VAR, name)
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} in its own process: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}

/// `libp11ha.so`, `dlopen`ed by the test itself.
struct Lib {
    handle: *mut c_void,
    list: *const CK_FUNCTION_LIST,
}

impl Lib {
    fn open(path: &Path) -> Lib {
        let cpath = CString::new(path.to_str().expect("UTF-8 path")).expect("path");
        // SAFETY: a NUL-terminated path of a PKCS#11 module.
        let handle = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!handle.is_null(), "dlopen {}", path.display());
        let mut lib = Lib {
            handle,
            list: std::ptr::null(),
        };
        let get: unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV =
            lib.sym("C_GetFunctionList");
        let mut list = std::ptr::null_mut();
        // SAFETY: C_GetFunctionList writes a pointer to its static list.
        assert_eq!(unsafe { get(&mut list) }, CKR_OK);
        lib.list = list;
        lib
    }

    fn f(&self) -> &CK_FUNCTION_LIST {
        // SAFETY: the module's static list, valid while the library is
        // loaded, which `self` keeps it.
        unsafe { &*self.list }
    }

    fn sym<F: Copy>(&self, name: &str) -> F {
        assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<usize>());
        let cname = CString::new(name).expect("name");
        // SAFETY: a live handle and a NUL-terminated name.
        let p = unsafe { libc::dlsym(self.handle, cname.as_ptr()) };
        assert!(!p.is_null(), "the library exports {name}");
        // SAFETY: F is the function pointer type of the symbol, as the
        // caller states by choosing it; sizes checked above.
        unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) }
    }

    /// `dlclose`; its answer.
    fn close(self) -> i32 {
        // SAFETY: the handle from dlopen, closed once; self (and so every
        // reference into the library) goes with it.
        unsafe { libc::dlclose(self.handle) }
    }
}

/// Whether `path` is loaded in this process (`RTLD_NOLOAD`).
fn is_loaded(path: &str) -> bool {
    let cpath = CString::new(path).expect("path");
    // SAFETY: RTLD_NOLOAD loads nothing: it returns a handle (counted) only
    // if the object is already loaded; that handle is closed at once.
    unsafe {
        let h = libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if h.is_null() {
            return false;
        }
        libc::dlclose(h);
        true
    }
}

fn initialize(f: &CK_FUNCTION_LIST) -> CK_RV {
    let mut args = CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: CKF_OS_LOCKING_OK,
        pReserved: std::ptr::null_mut(),
    };
    // SAFETY: valid initialisation arguments for the duration of the call.
    unsafe { f.C_Initialize.unwrap()(&mut args as *mut _ as *mut c_void) }
}

fn finalize(f: &CK_FUNCTION_LIST) -> CK_RV {
    // SAFETY: NULL is C_Finalize's only valid argument.
    unsafe { f.C_Finalize.unwrap()(std::ptr::null_mut()) }
}

/// The slots with a token, or the call's error.
fn slots(f: &CK_FUNCTION_LIST) -> Result<Vec<CK_SLOT_ID>, CK_RV> {
    let mut n: CK_ULONG = 0;
    // SAFETY: a NULL list asks for the count.
    let rv = unsafe { f.C_GetSlotList.unwrap()(CK_TRUE, std::ptr::null_mut(), &mut n) };
    if rv != CKR_OK {
        return Err(rv);
    }
    let mut list = vec![0; n as usize];
    // SAFETY: list has room for n ids.
    let rv = unsafe { f.C_GetSlotList.unwrap()(CK_TRUE, list.as_mut_ptr(), &mut n) };
    if rv != CKR_OK {
        return Err(rv);
    }
    list.truncate(n as usize);
    Ok(list)
}

/// A read/write session on the first slot with a token, logged in as the
/// user; the EC key's handle in it.
fn user_session(f: &CK_FUNCTION_LIST) -> Result<(CK_SESSION_HANDLE, CK_OBJECT_HANDLE), String> {
    let slot = *slots(f)
        .map_err(|rv| format!("C_GetSlotList: {rv:#x}"))?
        .first()
        .ok_or("no slot with a token")?;
    let mut s = 0;
    // SAFETY: no callback; s is a valid out pointer.
    let rv = unsafe {
        f.C_OpenSession.unwrap()(
            slot,
            CKF_SERIAL_SESSION | CKF_RW_SESSION,
            std::ptr::null_mut(),
            None,
            &mut s,
        )
    };
    if rv != CKR_OK {
        return Err(format!("C_OpenSession: {rv:#x}"));
    }
    let mut pin = USER_PIN.as_bytes().to_vec();
    // SAFETY: the PIN buffer is valid for its length.
    let rv = unsafe { f.C_Login.unwrap()(s, CKU_USER, pin.as_mut_ptr(), pin.len() as CK_ULONG) };
    if rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN {
        return Err(format!("C_Login: {rv:#x}"));
    }
    let mut class = CKO_PRIVATE_KEY;
    let mut label = b"ec-key".to_vec();
    let mut template = [
        CK_ATTRIBUTE {
            type_: CKA_CLASS,
            pValue: &mut class as *mut _ as *mut c_void,
            ulValueLen: std::mem::size_of::<CK_OBJECT_CLASS>() as CK_ULONG,
        },
        CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: label.as_mut_ptr() as *mut c_void,
            ulValueLen: label.len() as CK_ULONG,
        },
    ];
    let (mut key, mut n) = (0, 0);
    // SAFETY: the template's values live until FindObjectsFinal; key and n
    // are valid out pointers for one handle.
    let rv = unsafe {
        let init = f.C_FindObjectsInit.unwrap()(s, template.as_mut_ptr(), 2);
        let find = f.C_FindObjects.unwrap()(s, &mut key, 1, &mut n);
        let fin = f.C_FindObjectsFinal.unwrap()(s);
        [init, find, fin].into_iter().find(|&rv| rv != CKR_OK)
    };
    match (rv, n) {
        (None, 1) => Ok((s, key)),
        (Some(rv), _) => Err(format!("finding ec-key: {rv:#x}")),
        (None, n) => Err(format!("{n} keys labelled ec-key")),
    }
}

/// A raw ECDSA signature (r || s) of a SHA-256 `digest`.
fn sign(
    f: &CK_FUNCTION_LIST,
    s: CK_SESSION_HANDLE,
    key: CK_OBJECT_HANDLE,
    digest: &[u8],
) -> Result<Vec<u8>, String> {
    let mut mech = CK_MECHANISM {
        mechanism: CKM_ECDSA,
        pParameter: std::ptr::null_mut(),
        ulParameterLen: 0,
    };
    let mut data = digest.to_vec();
    let mut sig = vec![0u8; 64];
    let mut len = sig.len() as CK_ULONG;
    // SAFETY: the mechanism, data and signature buffers are valid for the
    // lengths given.
    let rv = unsafe {
        match f.C_SignInit.unwrap()(s, &mut mech, key) {
            CKR_OK => f.C_Sign.unwrap()(
                s,
                data.as_mut_ptr(),
                data.len() as CK_ULONG,
                sig.as_mut_ptr(),
                &mut len,
            ),
            rv => rv,
        }
    };
    if rv != CKR_OK {
        return Err(format!("signing: {rv:#x}"));
    }
    sig.truncate(len as usize);
    Ok(sig)
}

/// Whether openssl accepts `sig` (raw r || s) of `data` under the tokens'
/// EC key.
fn verifies(tokens: &Tokens, data: &[u8], sig: &[u8]) -> bool {
    sig.len() == 64 && openssl_verifies(&tokens.keys.join("ec-pub.pem"), data, &ecdsa_der(sig))
}

/// This process's threads: id and name.
fn threads() -> BTreeMap<u32, String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
        .filter_map(|t| {
            let id = t.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(t.path().join("comm")).ok()?;
            Some((id, name.trim().to_owned()))
        })
        .collect()
}

/// This process's open descriptors and what each refers to (the one
/// reading the directory left out).
fn descriptors() -> BTreeMap<i32, String> {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let target = target.display().to_string();
            (!target.ends_with("/fd")).then_some((fd, target))
        })
        .collect()
}

/// Live SoftHSM sessions among the handles 1..=4096 (SoftHSM numbers
/// sessions and objects from 1 with one counter).
fn live_sessions(f: &CK_FUNCTION_LIST) -> Vec<CK_SESSION_HANDLE> {
    (1..=4096)
        .filter(|&h| {
            let mut info = CK_SESSION_INFO::default();
            // SAFETY: info is a valid out pointer.
            unsafe { f.C_GetSessionInfo.unwrap()(h, &mut info) == CKR_OK }
        })
        .collect()
}

/// The members p11ha reports (`P11HA_GetMemberInfo`).
fn member_count(lib: &Lib) -> usize {
    let info: unsafe extern "C" fn(CK_ULONG, *mut MemberInfo) -> CK_RV =
        lib.sym("P11HA_GetMemberInfo");
    (0..)
        .take_while(|&i| {
            let mut m = MemberInfo::default();
            // SAFETY: m is a valid out pointer of the declared layout.
            unsafe { info(i, &mut m) == CKR_OK }
        })
        .count()
}

/// HA mode over one `p11-kit server` member (token 0 of `tokens`) and
/// SoftHSM as a module serving the other two; the recovery thread runs,
/// and the status thread serves [`status_socket`].
fn ha_with_a_remote_member() -> (Tokens, Vec<Server>) {
    let tokens = tokens(3);
    let servers = serve(&tokens, 1);
    let list = servers[0].address();
    let status = status_socket().display().to_string();
    ha::configure_ha(
        &tokens,
        200,
        &[
            ("ET_HSM_NETCLIENT_SERVERLIST", list.as_str()),
            ("P11HA_STATUS_SOCKET", status.as_str()),
        ],
    );
    (tokens, servers)
}

/// The live state's socket of this process.
fn status_socket() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("p11ha-lifecycle-{}.sock", std::process::id()))
}

#[test]
fn after_finalize_no_thread_or_descriptor_remains_and_the_library_unloads() {
    in_own_process(
        "after_finalize_no_thread_or_descriptor_remains_and_the_library_unloads",
        || {
            let (tokens, _servers) = ha_with_a_remote_member();
            let data = b"lifecycle: finalize".to_vec();
            let digest = sha256(&data);
            let path = lib_path();
            let threads_before = threads();
            let fds_before = descriptors();

            let lib = Lib::open(&path);
            assert_eq!(initialize(lib.f()), CKR_OK);
            assert_eq!(
                member_count(&lib),
                3,
                "one remote member, two module members"
            );
            let mut sessions = Vec::new();
            for _ in 0..6 {
                let (s, key) = user_session(lib.f()).expect("a session");
                let sig = sign(lib.f(), s, key, &digest).expect("sign");
                assert!(verifies(&tokens, &data, &sig));
                sessions.push(s);
            }
            // While initialised: p11ha's threads, its log, a connection
            // and the status socket.
            ha::wait_for("the recovery thread", || {
                threads().values().any(|n| n == "p11ha-recovery")
            });
            ha::wait_for("the status thread", || {
                threads().values().any(|n| n == "p11ha-status")
            });
            assert!(status_socket().exists());
            let open: Vec<String> = descriptors()
                .into_iter()
                .filter(|(fd, _)| !fds_before.contains_key(fd))
                .map(|(_, t)| t)
                .collect();
            let log = ha::log_path().display().to_string();
            assert!(open.contains(&log), "the HA log is open: {open:?}");
            assert!(
                open.iter().any(|t| t.starts_with("socket:")),
                "a connection to the server is open: {open:?}"
            );

            // The sessions are left open: C_Finalize closes them.
            assert_eq!(finalize(lib.f()), CKR_OK);
            assert_eq!(
                threads(),
                threads_before,
                "the threads of before C_Initialize, only"
            );
            assert_eq!(
                descriptors(),
                fds_before,
                "the descriptors of before C_Initialize, only"
            );
            assert!(!status_socket().exists(), "the status socket is removed");
            // SoftHSM, which p11ha initialised, was finalised (or unloaded).
            if is_loaded(SOFTHSM) {
                let softhsm = Lib::open(Path::new(SOFTHSM));
                assert_eq!(slots(softhsm.f()), Err(CKR_CRYPTOKI_NOT_INITIALIZED));
                assert_eq!(softhsm.close(), 0);
            }

            let path_text = path.to_str().expect("UTF-8 path").to_owned();
            assert_eq!(lib.close(), 0, "dlclose");
            assert!(!is_loaded(&path_text), "libp11ha.so is unloaded by dlclose");
            // A fork now runs no handler of the unloaded library.
            // SAFETY: the child only calls _exit.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: leaving the child at once.
                unsafe { libc::_exit(7) };
            }
            assert_eq!(wait_with_deadline(pid, Duration::from_secs(10)), Some(7));

            // The process goes on: the library loads and works again.
            let lib = Lib::open(&path);
            assert_eq!(initialize(lib.f()), CKR_OK);
            let (s, key) = user_session(lib.f()).expect("a session after reloading");
            let sig = sign(lib.f(), s, key, &digest).expect("sign after reloading");
            assert!(verifies(&tokens, &data, &sig));
            assert_eq!(finalize(lib.f()), CKR_OK);
            assert_eq!(threads(), threads_before);
            assert_eq!(lib.close(), 0);
        },
    );
}

/// An application that forbids p11ha threads of its own gets no status
/// socket and no status thread, and the library works.
#[test]
fn no_status_thread_when_the_application_forbids_threads() {
    in_own_process(
        "no_status_thread_when_the_application_forbids_threads",
        || {
            let (_tokens, _servers) = ha_with_a_remote_member();
            let threads_before = threads();
            let lib = Lib::open(&lib_path());
            let mut args = CK_C_INITIALIZE_ARGS {
                CreateMutex: None,
                DestroyMutex: None,
                LockMutex: None,
                UnlockMutex: None,
                flags: CKF_OS_LOCKING_OK | CKF_LIBRARY_CANT_CREATE_OS_THREADS,
                pReserved: std::ptr::null_mut(),
            };
            // SAFETY: valid initialisation arguments for the duration of the call.
            let rv = unsafe { lib.f().C_Initialize.unwrap()(&mut args as *mut _ as *mut c_void) };
            assert_eq!(rv, CKR_OK);
            user_session(lib.f()).expect("a session");
            assert_eq!(threads(), threads_before, "no thread of p11ha's");
            assert!(!status_socket().exists());
            let log = std::fs::read_to_string(ha::log_path()).unwrap_or_default();
            assert!(
                log.contains(
                    "Configuration P11HA_STATUS_SOCKET: the application forbids p11ha threads"
                ),
                "{log}"
            );
            assert_eq!(finalize(lib.f()), CKR_OK);
            assert_eq!(lib.close(), 0);
        },
    );
}

/// An application that unloads the library without `C_Finalize` (the
/// `cryptoki` crate does, when a `Pkcs11` is dropped unfinalised): the
/// library stays loaded while it is initialised, its recovery thread runs in
/// mapped code, and loaded again it is still initialised, with its state
/// whole; after `C_Finalize` a `dlclose` unloads it.
#[test]
fn unloaded_without_finalize_it_stays_initialised_and_whole() {
    in_own_process(
        "unloaded_without_finalize_it_stays_initialised_and_whole",
        || {
            let (tokens, _servers) = ha_with_a_remote_member();
            let data = b"lifecycle: unloaded".to_vec();
            let digest = sha256(&data);
            let path = lib_path();
            let path_text = path.to_str().expect("UTF-8 path").to_owned();
            let lib = Lib::open(&path);
            assert_eq!(initialize(lib.f()), CKR_OK);
            let (s, key) = user_session(lib.f()).expect("a session");
            ha::wait_for("the recovery thread", || {
                threads().values().any(|n| n == "p11ha-recovery")
            });
            assert_eq!(lib.close(), 0, "dlclose without C_Finalize");
            assert!(is_loaded(&path_text), "still loaded while initialised");
            // The recovery thread runs on (the process would crash otherwise).
            std::thread::sleep(Duration::from_millis(300));
            let lib = Lib::open(&path);
            assert_eq!(initialize(lib.f()), CKR_CRYPTOKI_ALREADY_INITIALIZED);
            // The session of before is there, and signs.
            let sig = sign(lib.f(), s, key, &digest).expect("sign on the session of before");
            assert!(verifies(&tokens, &data, &sig));
            assert_eq!(finalize(lib.f()), CKR_OK);
            assert_eq!(lib.close(), 0, "dlclose");
            assert!(!is_loaded(&path_text), "unloaded after C_Finalize");
        },
    );
}

#[test]
fn finalize_closes_every_member_session_of_a_module_it_shares() {
    in_own_process(
        "finalize_closes_every_member_session_of_a_module_it_shares",
        || {
            // The application uses SoftHSM itself too, so p11ha's
            // C_Finalize leaves it initialised: what p11ha opened on it
            // must be closed one by one.
            let tokens = tokens(3);
            ha::configure_ha(&tokens, 200, &[]);
            let softhsm = Lib::open(Path::new(SOFTHSM));
            assert_eq!(initialize(softhsm.f()), CKR_OK);
            assert!(live_sessions(softhsm.f()).is_empty());

            let lib = Lib::open(&lib_path());
            assert_eq!(initialize(lib.f()), CKR_OK);
            assert_eq!(member_count(&lib), 3);
            let data = b"lifecycle: sessions".to_vec();
            let digest = sha256(&data);
            for _ in 0..6 {
                let (s, key) = user_session(lib.f()).expect("a session");
                let sig = sign(lib.f(), s, key, &digest).expect("sign");
                assert!(verifies(&tokens, &data, &sig));
            }
            let during = live_sessions(softhsm.f());
            assert!(during.len() >= 6, "p11ha's member sessions: {during:?}");

            assert_eq!(finalize(lib.f()), CKR_OK);
            assert_eq!(live_sessions(softhsm.f()), Vec::<CK_SESSION_HANDLE>::new());
            // Still initialised for the application.
            let left = slots(softhsm.f());
            assert!(left.as_ref().is_ok_and(|s| s.len() >= 3), "{left:?}");
            assert_eq!(lib.close(), 0);
            assert_eq!(finalize(softhsm.f()), CKR_OK);
            assert_eq!(softhsm.close(), 0);
        },
    );
}

/// Waits for child `pid` at most `limit`; its exit status, `None` if it
/// was killed by a signal, or (having killed it) a panic if it ran out of
/// time.
fn wait_with_deadline(pid: libc::pid_t, limit: Duration) -> Option<i32> {
    let t = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(rc >= 0, "waitpid");
        if rc == pid {
            return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        }
        if t.elapsed() > limit {
            // SAFETY: kill and reap our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("the child did not finish in {limit:?}: a deadlock");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a forked child does, as PKCS#11 asks of it: nothing before its own
/// `C_Initialize`, then a session, a login and a signature of its own.
fn child_work(f: &CK_FUNCTION_LIST, digest: &[u8]) -> Result<Vec<u8>, String> {
    match slots(f) {
        Err(CKR_CRYPTOKI_NOT_INITIALIZED) => {}
        other => return Err(format!("before C_Initialize, C_GetSlotList: {other:?}")),
    }
    match initialize(f) {
        CKR_OK => {}
        rv => return Err(format!("C_Initialize: {rv:#x}")),
    }
    let (s, key) = user_session(f)?;
    let sig = sign(f, s, key, digest)?;
    match finalize(f) {
        CKR_OK => Ok(sig),
        rv => Err(format!("C_Finalize: {rv:#x}")),
    }
}

/// Forks; the child runs [`child_work`] under a 20 s alarm and sends back
/// its signature or its error. The parent waits 30 s at most.
fn fork_and_sign(f: &CK_FUNCTION_LIST, digest: &[u8]) -> Result<Vec<u8>, String> {
    let mut pipe = [0; 2];
    // SAFETY: pipe writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: the child uses the library (which PKCS#11 allows once it
    // calls C_Initialize), writes to the pipe and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: a deadlock ends the child (SIGALRM) instead of hanging.
        unsafe { libc::alarm(20) };
        let reply = match child_work(f, digest) {
            Ok(sig) => [&[0u8][..], &sig].concat(),
            Err(e) => [&[1u8][..], e.as_bytes()].concat(),
        };
        // SAFETY: the write end of the pipe, a valid buffer; then leave
        // without running the parent's exit handlers.
        unsafe {
            libc::write(pipe[1], reply.as_ptr() as *const c_void, reply.len());
            libc::_exit(0);
        }
    }
    // SAFETY: the parent's copy of the write end, closed once.
    unsafe { libc::close(pipe[1]) };
    let status = wait_with_deadline(pid, Duration::from_secs(30));
    // SAFETY: the read end, owned from here on.
    let mut read = unsafe { std::fs::File::from_raw_fd(pipe[0]) };
    let mut reply = Vec::new();
    read.read_to_end(&mut reply)
        .expect("read the child's reply");
    assert_eq!(
        status,
        Some(0),
        "the child's exit (None: killed, e.g. by its alarm)"
    );
    match reply.split_first() {
        Some((0, sig)) => Ok(sig.to_vec()),
        Some((_, e)) => Err(String::from_utf8_lossy(e).into_owned()),
        None => Err("no reply".into()),
    }
}

#[test]
fn a_forked_child_initializes_and_signs_without_deadlock() {
    in_own_process(
        "a_forked_child_initializes_and_signs_without_deadlock",
        || {
            let (tokens, _servers) = ha_with_a_remote_member();
            let data = b"lifecycle: fork".to_vec();
            let digest = sha256(&data);
            let lib = Lib::open(&lib_path());
            assert_eq!(initialize(lib.f()), CKR_OK);
            let sessions: Vec<_> = (0..6)
                .map(|_| user_session(lib.f()).expect("a session"))
                .collect();
            let member: unsafe extern "C" fn(CK_SESSION_HANDLE, *mut CK_ULONG) -> CK_RV =
                lib.sym("P11HA_GetSessionMember");
            let on_remote = sessions.iter().any(|&(s, _)| {
                let mut m = CK_ULONG::MAX;
                // SAFETY: m is a valid out pointer.
                let rv = unsafe { member(s, &mut m) };
                rv == CKR_OK && m == 0
            });
            assert!(on_remote, "a session on the remote member (member 0)");
            // A parent thread keeps the library busy (its locks taken and
            // released) while the children are forked.
            let stop = Arc::new(AtomicBool::new(false));
            let signed = Arc::new(AtomicUsize::new(0));
            let busy = {
                let (stop, signed) = (stop.clone(), signed.clone());
                let (s, key) = sessions[0];
                let digest = digest.clone();
                let list = lib.list as usize;
                std::thread::spawn(move || {
                    // SAFETY: the library stays loaded until this thread is
                    // joined.
                    let f = unsafe { &*(list as *const CK_FUNCTION_LIST) };
                    while !stop.load(Ordering::SeqCst) {
                        sign(f, s, key, &digest).expect("the parent's busy thread signs");
                        signed.fetch_add(1, Ordering::SeqCst);
                    }
                })
            };
            ha::wait_for("the busy thread", || signed.load(Ordering::SeqCst) > 0);
            for i in 0..5 {
                let sig =
                    fork_and_sign(lib.f(), &digest).unwrap_or_else(|e| panic!("child {i}: {e}"));
                assert!(verifies(&tokens, &data, &sig), "child {i}'s signature");
            }
            stop.store(true, Ordering::SeqCst);
            busy.join().expect("the busy thread");
            // The parent is untouched by its children: its sessions (the
            // remote member's included) still sign.
            for &(s, key) in &sessions {
                let sig = sign(lib.f(), s, key, &digest).expect("the parent signs");
                assert!(verifies(&tokens, &data, &sig));
            }
            assert_eq!(finalize(lib.f()), CKR_OK);
            assert_eq!(lib.close(), 0);
        },
    );
}
