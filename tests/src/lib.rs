//! Fixtures for p11ha's integration tests and benchmarks.
//!
//! The tests drive the built `libp11ha.so` as an application does, through
//! the `cryptoki` crate (and, for what the safe API cannot express, such as
//! NULL pointers, the raw function list), against real SoftHSM2 tokens.
//!
//! A PKCS#11 library is a per-process singleton that reads its
//! configuration at `C_Initialize`, so each test binary configures the
//! library once ([`Library::start`]) and its tests share it. Each process
//! gets its own copy of a set of identical tokens, made once per build by
//! `scripts/mktokens.sh` and copied (a copied SoftHSM token directory is a
//! perfect clone).

use std::ffi::{CString, c_void};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use cryptoki_sys::{CK_FUNCTION_LIST, CK_RV, CK_SESSION_HANDLE, CK_ULONG};

pub mod dh;
pub mod ha;
pub mod pipe;
pub mod remote;
pub mod status;

/// The user PIN of every test token.
pub const USER_PIN: &str = "1234";
/// The SO PIN of every test token.
pub const SO_PIN: &str = "12345678";
/// The label of every test token.
pub const LABEL: &str = "TokName";
/// SoftHSM's module.
pub const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// The `libp11ha.so` under test. Two builds are tested:
/// - the release build (`$TEST_P11HA_LIB`, default
///   `target/release/libp11ha.so`), what users run;
/// - the test build with the `fault-injection` feature (`$TEST_P11HA_FAULT_LIB`,
///   default `target/fault/release/libp11ha.so`), whose members can be made
///   to fail on command (`P11HA_InjectFault`).
///
/// A test gets the test build when its process is configured with
/// `P11HA_FAULT_INJECTION=YES` (as [`ha::configure_ha`] does), the release
/// build otherwise.
pub fn lib_path() -> PathBuf {
    let fault = std::env::var("P11HA_FAULT_INJECTION").is_ok_and(|v| v.eq_ignore_ascii_case("YES"));
    let (var, default, build) = if fault {
        (
            "TEST_P11HA_FAULT_LIB",
            "target/fault/release/libp11ha.so",
            "cargo build --release -p p11ha-ffi --features fault-injection --target-dir target/fault",
        )
    } else {
        (
            "TEST_P11HA_LIB",
            "target/release/libp11ha.so",
            "cargo build --release -p p11ha-ffi",
        )
    };
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(default));
    assert!(
        path.exists(),
        "{} does not exist: build it first with `{build}` (scripts/test.sh does), \
         or point {var} at it",
        path.display()
    );
    path
}

/// A directory of identical test tokens for this process.
pub struct Tokens {
    /// The directory (holds `softhsm2.conf` and `tokens/`).
    pub dir: PathBuf,
    /// Where the key material's public halves are, as PEM (`ec-pub.pem`,
    /// `rsa-pub.pem`) and the AES key as hex (`aes.hex`).
    pub keys: PathBuf,
}

impl Tokens {
    /// `SOFTHSM2_CONF` for these tokens.
    pub fn conf(&self) -> PathBuf {
        self.dir.join("softhsm2.conf")
    }
}

/// A fresh copy of `n` identical tokens, for this process alone.
pub fn tokens(n: usize) -> Tokens {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let base = repo_root().join("target/p11ha-fixture");
    let template = template(&base, n);
    remove_stale_runs(&base);
    let dir = base.join(format!(
        "run-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&template.join("tokens"), &dir.join("tokens"));
    std::fs::write(
        dir.join("softhsm2.conf"),
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .expect("write softhsm2.conf");
    Tokens {
        dir,
        keys: template.join("keys"),
    }
}

/// Removes the token copies of test processes that have ended.
fn remove_stale_runs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("run-"))
            .and_then(|n| n.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The template of `n` tokens, made once by `scripts/mktokens.sh`. Processes
/// racing to make it each build a private one and rename it into place; the
/// loser's is removed. Threads of one process (the tests of a binary) take
/// turns, since they would build in the same private directory.
fn template(base: &Path, n: usize) -> PathBuf {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let template = base.join(format!("template-{n}"));
    let _turn = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    if template.join("softhsm2.conf").exists() {
        return template;
    }
    std::fs::create_dir_all(base).expect("create target/p11ha-fixture");
    let tmp = base.join(format!("building-{n}-{}", std::process::id()));
    let out = Command::new(repo_root().join("scripts/mktokens.sh"))
        .arg(&tmp)
        .arg(n.to_string())
        .output()
        .expect("run scripts/mktokens.sh");
    assert!(
        out.status.success(),
        "scripts/mktokens.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if std::fs::rename(&tmp, &template).is_err() {
        // Another process made it first.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    assert!(template.join("softhsm2.conf").exists());
    template
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create token dir");
    for entry in std::fs::read_dir(from).expect("read token dir") {
        let entry = entry.expect("token dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy token file");
        }
    }
}

/// Puts the configuration of `libp11ha.so` in this process's environment,
/// where its `C_Initialize` reads it: SoftHSM over `tokens` as the module,
/// and `config` (KEY=VALUE items) on top. Call it before the library is
/// initialised, while no other thread reads the environment.
pub fn configure(tokens: &Tokens, config: &[(&str, &str)]) {
    let conf = tokens.conf().display().to_string();
    let base = [("SOFTHSM2_CONF", conf.as_str()), ("P11HA_MODULES", SOFTHSM)];
    for (k, v) in base.iter().chain(config) {
        // SAFETY: the caller calls this before the library under test
        // exists, while no other thread of the process reads the environment.
        unsafe { std::env::set_var(k, v) };
    }
}

/// `libp11ha.so` configured and initialised for this process.
pub struct Library {
    /// The library, through the `cryptoki` crate.
    pub pkcs11: Pkcs11,
    /// The tokens behind it.
    pub tokens: Tokens,
}

impl Library {
    /// Configures `libp11ha.so` with `config` (KEY=VALUE items, on top of
    /// `P11HA_MODULES` = SoftHSM) over `n` fresh tokens, loads it and calls
    /// `C_Initialize`. Once per process: later calls return the same
    /// library, whatever they ask for.
    pub fn start(n: usize, config: &[(&str, &str)]) -> &'static Library {
        Self::start_with(|| {
            let tokens = tokens(n);
            configure(&tokens, config);
            tokens
        })
    }

    /// As [`Library::start`], with the tokens made and the environment
    /// configured by `setup`.
    pub fn start_with(setup: impl FnOnce() -> Tokens) -> &'static Library {
        static LIB: OnceLock<Library> = OnceLock::new();
        LIB.get_or_init(|| {
            let tokens = setup();
            let pkcs11 = Pkcs11::new(lib_path()).expect("load libp11ha.so");
            pkcs11
                .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
                .expect("C_Initialize");
            Library { pkcs11, tokens }
        })
    }

    /// The only slot with a token (WLD tests) or the first.
    pub fn slot(&self) -> Slot {
        self.pkcs11.get_slots_with_token().expect("slots")[0]
    }

    /// A read/write session on the slot.
    pub fn session(&self) -> Session {
        self.pkcs11
            .open_rw_session(self.slot())
            .expect("open session")
    }

    /// A session, logged in as the user (login is token-wide: once logged
    /// in, every session is; `CKR_USER_ALREADY_LOGGED_IN` is fine).
    pub fn user_session(&self) -> Session {
        let s = self.session();
        match s.login(UserType::User, Some(&AuthPin::new(USER_PIN.into()))) {
            Ok(()) => {}
            Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::UserAlreadyLoggedIn,
                _,
            )) => {}
            Err(e) => panic!("login: {e}"),
        }
        s
    }
}

/// The one object of `class` labelled `label`.
pub fn find_one(session: &Session, class: ObjectClass, label: &str) -> ObjectHandle {
    let found = session
        .find_objects(&[Attribute::Class(class), Attribute::Label(label.into())])
        .expect("find");
    assert_eq!(found.len(), 1, "one {class:?} labelled {label}");
    found[0]
}

/// The raw PKCS#11 function list of `libp11ha.so`, for what the safe API
/// cannot express (NULL pointers, bad lengths, stale handles).
pub fn raw() -> &'static CK_FUNCTION_LIST {
    static LIST: OnceLock<usize> = OnceLock::new();
    let p = *LIST.get_or_init(|| {
        let f: unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV =
            symbol("C_GetFunctionList");
        let mut list = std::ptr::null_mut();
        // SAFETY: C_GetFunctionList writes a pointer to its static list.
        assert_eq!(unsafe { f(&mut list) }, 0);
        list as usize
    });
    // SAFETY: the list is static in the library, which stays loaded.
    unsafe { &*(p as *const CK_FUNCTION_LIST) }
}

/// A function exported by `libp11ha.so`, looked up by name.
pub fn symbol<F: Copy>(name: &str) -> F {
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<usize>());
    let path = CString::new(lib_path().to_str().expect("UTF-8 path")).expect("path");
    let name = CString::new(name).expect("name");
    // SAFETY: dlopen of the library under test (reference-counted: the same
    // handle the cryptoki crate holds); dlsym of a NUL-terminated name.
    let f = unsafe {
        let h = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        assert!(!h.is_null(), "dlopen libp11ha.so");
        libc::dlsym(h, name.as_ptr())
    };
    assert!(!f.is_null(), "libp11ha.so exports {name:?}");
    // SAFETY: F is a function pointer type of the symbol's signature, as the
    // caller states by choosing F; sizes checked above.
    unsafe { std::mem::transmute_copy::<*mut c_void, F>(&f) }
}

/// What `P11HA_GetMemberInfo` reports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MemberInfo {
    /// The virtual slot it serves.
    pub slot: CK_ULONG,
    /// Its own slot id.
    pub member_slot: CK_ULONG,
    /// Sessions on it.
    pub sessions: CK_ULONG,
    /// In service.
    pub up: u8,
}

/// `P11HA_GetMemberInfo(index)`; `None` past the last member.
pub fn member_info(index: usize) -> Option<MemberInfo> {
    let f: unsafe extern "C" fn(CK_ULONG, *mut MemberInfo) -> CK_RV = symbol("P11HA_GetMemberInfo");
    let mut info = MemberInfo::default();
    // SAFETY: info is a valid out pointer of the declared layout.
    let rv = unsafe { f(index as CK_ULONG, &mut info) };
    (rv == 0).then_some(info)
}

/// `P11HA_GetSessionMember(session)`: which member serves it.
pub fn session_member(session: &Session) -> usize {
    session_member_raw(session.handle())
}

/// `P11HA_GetSessionMember` for a raw handle.
pub fn session_member_raw(handle: CK_SESSION_HANDLE) -> usize {
    let f: unsafe extern "C" fn(CK_SESSION_HANDLE, *mut CK_ULONG) -> CK_RV =
        symbol("P11HA_GetSessionMember");
    let mut index: CK_ULONG = 0;
    // SAFETY: index is a valid out pointer.
    let rv = unsafe { f(handle, &mut index) };
    assert_eq!(rv, 0, "P11HA_GetSessionMember");
    index as usize
}

/// AES-256-CBC of `data` with the test tokens' AES key (`keys/aes.hex`)
/// and `iv`, as openssl computes it: the reference for ciphertexts made
/// through p11ha. `pad`: PKCS#7 padding (CKM_AES_CBC_PAD), else none.
pub fn openssl_aes_256_cbc(keys: &Path, iv: &[u8], pad: bool, data: &[u8]) -> Vec<u8> {
    let key_hex = std::fs::read_to_string(keys.join("aes.hex")).expect("keys/aes.hex");
    let iv_hex: String = iv.iter().map(|b| format!("{b:02x}")).collect();
    let mut args = vec!["enc", "-aes-256-cbc", "-K", key_hex.trim(), "-iv", &iv_hex];
    if !pad {
        args.push("-nopad");
    }
    openssl(&args, data)
}

/// One `C_FindObjects` of at most `n` handles, through the raw function
/// list (the cryptoki crate only finds everything at once).
pub fn find_batch(s: &Session, n: usize) -> Vec<u64> {
    let mut out = vec![0; n];
    let mut count: CK_ULONG = 0;
    // SAFETY: out has n entries; count is a valid CK_ULONG.
    let rv =
        unsafe { raw().C_FindObjects.unwrap()(s.handle(), out.as_mut_ptr(), n as _, &mut count) };
    assert_eq!(rv, 0, "C_FindObjects");
    out.truncate(count as usize);
    out
}

/// Runs `openssl` with `args`, feeding `input`; returns stdout, panics with
/// stderr on failure.
pub fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run openssl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("feed openssl");
    let out = child.wait_with_output().expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Whether `openssl` accepts `signature` of `data` under the PEM public key
/// at `key` with `SHA-256` (DER ECDSA or PKCS#1 v1.5 RSA).
pub fn openssl_verifies(key: &Path, data: &[u8], signature: &[u8]) -> bool {
    let dir = std::env::temp_dir().join(format!("p11ha-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    static N: AtomicUsize = AtomicUsize::new(0);
    let sig = dir.join(format!("sig-{}", N.fetch_add(1, Ordering::SeqCst)));
    std::fs::write(&sig, signature).expect("write signature");
    let status = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(key)
        .arg("-signature")
        .arg(&sig)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(data)?;
            c.wait()
        })
        .expect("run openssl");
    let _ = std::fs::remove_file(&sig);
    status.success()
}

/// A raw ECDSA signature (r || s, 32 bytes each) as DER, for openssl.
pub fn ecdsa_der(raw: &[u8]) -> Vec<u8> {
    assert_eq!(raw.len(), 64, "P-256 signature");
    fn int(x: &[u8]) -> Vec<u8> {
        let mut x = x
            .iter()
            .skip_while(|&&b| b == 0)
            .copied()
            .collect::<Vec<_>>();
        if x.first().is_none_or(|&b| b & 0x80 != 0) {
            x.insert(0, 0);
        }
        let mut out = vec![0x02, x.len() as u8];
        out.extend(x);
        out
    }
    let (r, s) = (int(&raw[..32]), int(&raw[32..]));
    let mut out = vec![0x30, (r.len() + s.len()) as u8];
    out.extend(r);
    out.extend(s);
    out
}

/// SHA-256 of `data`, computed by openssl.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    openssl(&["dgst", "-sha256", "-binary"], data)
}
