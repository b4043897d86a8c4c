//! Reading the live state (`P11HA_STATUS_SOCKET`) as a scraper does.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// One exposition, read to its end (the library closes the connection);
/// `None` if the socket cannot be reached or the exposition is not whole.
pub fn try_scrape(path: &Path) -> Option<String> {
    let mut s = UnixStream::connect(path).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.ends_with("# EOF\n").then_some(text)
}

/// One exposition; panics if there is none.
pub fn scrape(path: &Path) -> String {
    try_scrape(path).unwrap_or_else(|| panic!("no whole exposition at {}", path.display()))
}

/// The value of the sample `name{member="<member>",...}`, if there is one.
pub fn try_member_value(text: &str, name: &str, member: usize) -> Option<u64> {
    let prefix = format!("{name}{{member=\"{member}\",");
    let line = text.lines().find(|l| l.starts_with(&prefix))?;
    line.rsplit(' ').next()?.parse().ok()
}

/// The value of the sample `name{member="<member>",...}`.
pub fn member_value(text: &str, name: &str, member: usize) -> u64 {
    try_member_value(text, name, member)
        .unwrap_or_else(|| panic!("no {name} of member {member} in\n{text}"))
}

/// The value of the sample written `sample` (name and labels), if any.
pub fn try_value(text: &str, sample: &str) -> Option<u64> {
    let prefix = format!("{sample} ");
    let line = text.lines().find(|l| l.starts_with(&prefix))?;
    line[prefix.len()..].parse().ok()
}

/// The value of the sample written `sample` (name and labels).
pub fn value(text: &str, sample: &str) -> u64 {
    try_value(text, sample).unwrap_or_else(|| panic!("no {sample} in\n{text}"))
}
