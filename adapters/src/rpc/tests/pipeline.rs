//! Calls in flight together on one connection (`conn`): requests queued
//! while earlier replies are awaited, each reply read by the call that
//! wrote its request, and a broken connection failing every call in flight
//! at once. The server is a stand-in on a real Unix socket, so that the
//! client's real stream ([`NetConnector`], split in two) is what is tested;
//! it answers only what these tests send, and does on cue what a p11-kit
//! server cannot be made to do: hold replies back, answer out of order,
//! freeze.

use std::io::{Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::net::{Address, NetConnector};

type Net = RpcMember<NetConnector, SpinLock, Box<[u8]>>;

/// A listening socket in a directory of its own.
struct Place {
    dir: PathBuf,
    listener: UnixListener,
    path: PathBuf,
}

impl Place {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("p11ha-pipe-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.sock");
        let listener = UnixListener::bind(&path).unwrap();
        Place {
            dir,
            listener,
            path,
        }
    }

    fn connector(&self, call: Duration) -> NetConnector {
        NetConnector::new(
            Address::Unix(self.path.clone()),
            Duration::from_secs(5),
            call,
        )
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One request frame: its code and body.
fn read_frame(s: &mut UnixStream) -> std::io::Result<(u32, Vec<u8>)> {
    let mut h = [0u8; 12];
    s.read_exact(&mut h)?;
    let word = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let mut body = vec![0u8; word(4) as usize + word(8) as usize];
    s.read_exact(&mut body)?;
    Ok((word(0), body[word(4) as usize..].to_vec()))
}

fn write_frame(s: &mut UnixStream, code: u32, body: &[u8]) {
    let mut f = Vec::new();
    f.extend_from_slice(&code.to_be_bytes());
    f.extend_from_slice(&0u32.to_be_bytes());
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(body);
    s.write_all(&f).unwrap();
}

/// Accepts the member's connection and answers its setting up (version
/// 2, one token).
fn accept(listener: &UnixListener) -> UnixStream {
    let (mut s, _) = listener.accept().unwrap();
    let mut offer = [0u8; 1];
    s.read_exact(&mut offer).unwrap();
    s.write_all(&[2]).unwrap();
    let t = alpha();
    let mut list = Body::new(4, "au");
    list.byte(1).u32(1).ulong(t.slot);
    for reply in [
        Body::new(1, ""),
        list,
        Body::token_info(&t.label, &t.serial),
    ] {
        let (code, _) = read_frame(&mut s).unwrap();
        write_frame(&mut s, code, &reply.0);
    }
    s
}

/// The session a `C_GetSessionInfo` request names (its last value).
fn session_of(body: &[u8]) -> u64 {
    u64::from_be_bytes(body[body.len() - 8..].try_into().unwrap())
}

/// A `C_GetSessionInfo` reply whose state is the session asked about, so
/// that a reply read by the wrong call shows.
fn session_reply(session: u64) -> Vec<u8> {
    let mut b = Body::new(13, "uuuu");
    b.ulong(0x11).ulong(session).ulong(4).ulong(0);
    b.0
}

fn member(place: &Place, call: Duration, buffers: usize) -> Net {
    let bufs = (0..buffers).map(|_| vec![0u8; BUF].into_boxed_slice());
    let m = RpcMember::connect(place.connector(call), || Some(SpinLock::new()), bufs, 0);
    m.expect("connect").0
}

/// Runs `f` in `n` threads at once; their results in thread order.
fn together<T: Send + 'static>(
    m: &Arc<Net>,
    n: usize,
    f: impl Fn(&Net, usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let start = Arc::new(Barrier::new(n));
    let f = Arc::new(f);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (m, start, f) = (m.clone(), start.clone(), f.clone());
            thread::spawn(move || {
                start.wait();
                f(&m, i)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn a_second_request_goes_out_while_the_first_awaits_its_reply() {
    let place = Place::new("overlap");
    let listener = place.listener.try_clone().unwrap();
    let server = thread::spawn(move || {
        let mut s = accept(&listener);
        // Both requests must arrive before either is answered: a client
        // that waits for the first reply before it sends the second is
        // never answered (and fails at its deadline).
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let first = read_frame(&mut s).unwrap();
        let second = read_frame(&mut s).expect("the second request, with the first unanswered");
        for (code, body) in [first, second] {
            write_frame(&mut s, code, &session_reply(session_of(&body)));
        }
        s
    });
    let m = Arc::new(member(&place, Duration::from_secs(10), 2));
    let states = together(&m, 2, |m, i| {
        m.session_info(0x100 + i as u64).map(|s| s.state)
    });
    assert_eq!(
        states,
        [Ok(0x100), Ok(0x101)],
        "each call has its own reply"
    );
    drop(server.join().unwrap());
}

#[test]
fn with_one_buffer_calls_go_one_at_a_time() {
    let place = Place::new("single");
    let listener = place.listener.try_clone().unwrap();
    let server = thread::spawn(move || {
        let mut s = accept(&listener);
        let mut overlapped = false;
        for _ in 0..20 {
            let (code, body) = read_frame(&mut s).unwrap();
            // Nothing may be waiting while a request is unanswered.
            thread::sleep(Duration::from_millis(2));
            s.set_nonblocking(true).unwrap();
            overlapped |= s.read(&mut [0u8; 1]).is_ok();
            s.set_nonblocking(false).unwrap();
            write_frame(&mut s, code, &session_reply(session_of(&body)));
        }
        overlapped
    });
    let m = Arc::new(member(&place, Duration::from_secs(10), 1));
    let states = together(&m, 4, |m, i| {
        (0..5)
            .map(|_| m.session_info(0x200 + i as u64).map(|s| s.state))
            .collect::<Vec<_>>()
    });
    for (i, s) in states.iter().enumerate() {
        assert!(s.iter().all(|s| *s == Ok(0x200 + i as u64)), "{s:?}");
    }
    assert!(
        !server.join().unwrap(),
        "a request was sent while another was unanswered"
    );
}

#[test]
fn many_calls_in_flight_each_get_their_own_reply() {
    let place = Place::new("many");
    let listener = place.listener.try_clone().unwrap();
    const THREADS: usize = 8;
    const CALLS: usize = 200;
    let server = thread::spawn(move || {
        let mut s = accept(&listener);
        for _ in 0..THREADS * CALLS {
            let (code, body) = read_frame(&mut s).unwrap();
            write_frame(&mut s, code, &session_reply(session_of(&body)));
        }
    });
    let m = Arc::new(member(&place, Duration::from_secs(10), 2));
    let states = together(&m, THREADS, |m, i| {
        (0..CALLS)
            .map(|_| m.session_info(0x300 + i as u64).map(|s| s.state))
            .collect::<Vec<_>>()
    });
    for (i, s) in states.iter().enumerate() {
        assert!(
            s.iter().all(|s| *s == Ok(0x300 + i as u64)),
            "thread {i}: {s:?}"
        );
    }
    server.join().unwrap();
}

/// Two calls in flight; the server, having read both, does `then`, and
/// keeps the connection open until both calls are over. Each call's
/// result, and when it came back.
fn two_in_flight(
    name: &str,
    call: Duration,
    then: impl FnOnce(&mut UnixStream, [(u32, Vec<u8>); 2]) + Send + 'static,
) -> (Vec<(p11ha_core::Result<u64>, Instant)>, Arc<Net>) {
    let place = Place::new(name);
    let listener = place.listener.try_clone().unwrap();
    let server = thread::spawn(move || {
        let mut s = accept(&listener);
        let first = read_frame(&mut s).unwrap();
        let second = read_frame(&mut s).unwrap();
        then(&mut s, [first, second]);
        s
    });
    let m = Arc::new(member(&place, call, 2));
    let results = together(&m, 2, |m, i| {
        let r = m.session_info(0x400 + i as u64).map(|s| s.state);
        (r, Instant::now())
    });
    drop(server.join().unwrap());
    (results, m)
}

fn is_transport(r: &p11ha_core::Result<u64>) -> bool {
    matches!(r, Err(Error::Transport(_)))
}

#[test]
fn a_hang_up_fails_every_call_in_flight_and_nothing_is_written_after() {
    let (results, m) = two_in_flight("hangup", Duration::from_secs(30), |s, _| {
        s.shutdown(std::net::Shutdown::Both).unwrap()
    });
    assert!(results.iter().all(|(r, _)| is_transport(r)), "{results:?}");
    // Broken for good: the next call fails at once, without a connection.
    assert_eq!(
        m.session_info(1).map(|s| s.state),
        Err(Error::Transport(TransportError::Disconnected))
    );
}

#[test]
fn a_reply_out_of_order_is_taken_by_no_call() {
    let (results, m) = two_in_flight("order", Duration::from_secs(30), |s, [a, b]| {
        // The second request's reply first, then the first's.
        write_frame(s, b.0, &session_reply(session_of(&b.1)));
        write_frame(s, a.0, &session_reply(session_of(&a.1)));
    });
    // The first call's reader met the other call's code: no call got an
    // answer, and the connection is broken.
    assert!(results.iter().all(|(r, _)| is_transport(r)), "{results:?}");
    assert!(is_transport(&m.session_info(1).map(|s| s.state)));
    drop(m);
}

#[test]
fn a_frozen_server_fails_both_calls_within_one_deadline() {
    let deadline = Duration::from_millis(1000);
    let start = Instant::now();
    // Answers nothing.
    let (results, m) = two_in_flight("frozen", deadline, |_, _| {});
    assert!(results.iter().all(|(r, _)| is_transport(r)), "{results:?}");
    let (a, b) = (results[0].1, results[1].1);
    let gap = if a > b { a - b } else { b - a };
    // The later call does not wait a deadline of its own after the first
    // one's passed: the connection is dead for both at once.
    assert!(gap < deadline / 2, "the calls ended {gap:?} apart");
    assert!(a.max(b) - start < deadline * 3, "{:?}", a.max(b) - start);
    drop(m);
}
