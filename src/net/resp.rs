//! RESP2, the Redis protocol: requests (multibulk `*N` arrays of `$len`
//! bulk strings, or inline lines of space-separated words) parsed
//! incrementally from a connection's input, and replies encoded.
//!
//! Every length is checked before anything is allocated for it: a bulk
//! string over the configured maximum, a negative or malformed number, or an
//! overlong inline line is a [`RespError`], which a server answers with a
//! protocol error before closing that connection.

use std::fmt;

/// The default largest bulk string: 512 MiB, as Redis.
pub const DEFAULT_MAX_BULK: usize = 512 << 20;
/// The most arguments one request may have.
pub const MAX_ARGS: usize = 1 << 20;
/// The longest inline request (or `*`/`$` header line).
pub const MAX_LINE: usize = 64 * 1024;

/// A parsed request: its arguments, and how many input bytes it took.
pub type Request<'a> = (Vec<&'a [u8]>, usize);

/// A malformed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RespError(pub String);

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Protocol error: {}", self.0)
    }
}

impl std::error::Error for RespError {}

fn err<T>(msg: impl Into<String>) -> Result<Option<T>, RespError> {
    Err(RespError(msg.into()))
}

/// The line at `at` (without its CRLF) and where the next one starts;
/// `None` when its end hasn't arrived.
fn line(input: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, RespError> {
    let rest = &input[at.min(input.len())..];
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(n) if n > MAX_LINE => err("too big header line"),
        Some(n) => Ok(Some((&rest[..n], at + n + 2))),
        None if rest.len() > MAX_LINE => err("too big header line"),
        None => Ok(None),
    }
}

/// Parses the decimal number of a `*` or `$` header.
fn number(digits: &[u8], what: &str) -> Result<i64, RespError> {
    if digits.is_empty() || digits.len() > 19 {
        return Err(RespError(format!("invalid {what}")));
    }
    let (neg, d) = match digits.split_first() {
        Some((b'-', d)) => (true, d),
        _ => (false, digits),
    };
    if d.is_empty() || !d.iter().all(u8::is_ascii_digit) {
        return Err(RespError(format!("invalid {what}")));
    }
    let v = d
        .iter()
        .try_fold(0i64, |v, &c| {
            v.checked_mul(10)?.checked_add(i64::from(c - b'0'))
        })
        .ok_or_else(|| RespError(format!("invalid {what}")))?;
    Ok(if neg { -v } else { v })
}

/// Parses one request at the start of `input`: `Ok(Some((arguments,
/// consumed)))`, `Ok(None)` while incomplete (nothing is allocated for
/// announced lengths meanwhile), or an error. An empty inline line or
/// `*0` / `*-1` is a request with no arguments.
pub fn parse_request(input: &[u8], max_bulk: usize) -> Result<Option<Request<'_>>, RespError> {
    if input.is_empty() {
        return Ok(None);
    }
    if input[0] != b'*' {
        // Inline: one line of words.
        let end = match input.iter().position(|&c| c == b'\n') {
            Some(n) => n,
            None if input.len() > MAX_LINE => return err("too big inline request"),
            None => return Ok(None),
        };
        if end > MAX_LINE {
            return err("too big inline request");
        }
        let text = input[..end].strip_suffix(b"\r").unwrap_or(&input[..end]);
        let args = text
            .split(|c| c.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .collect();
        return Ok(Some((args, end + 1)));
    }
    let Some((head, mut at)) = line(input, 1)? else {
        return Ok(None);
    };
    let n = number(head, "multibulk length")?;
    if n <= 0 {
        return Ok(Some((Vec::new(), at)));
    }
    if n as usize > MAX_ARGS {
        return err("invalid multibulk length");
    }
    // Grow with what arrives, not with what is announced.
    let mut args = Vec::new();
    for _ in 0..n {
        match input.get(at) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&c) => return err(format!("expected '$', got '{}'", char::from(c))),
        }
        let Some((len, next)) = line(input, at + 1)? else {
            return Ok(None);
        };
        let len = number(len, "bulk length")?;
        if len < 0 || len as u64 > max_bulk as u64 {
            return err("invalid bulk length");
        }
        let len = len as usize;
        if input.len() < next + len + 2 {
            return Ok(None);
        }
        if &input[next + len..next + len + 2] != b"\r\n" {
            return err("bulk string not followed by CRLF");
        }
        args.push(&input[next..next + len]);
        at = next + len + 2;
    }
    Ok(Some((args, at)))
}

/// Appends a simple string reply (`+OK`).
pub fn simple(out: &mut Vec<u8>, s: &str) {
    out.push(b'+');
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends an error reply (`-ERR ...`); line breaks in `msg` become spaces.
pub fn error(out: &mut Vec<u8>, msg: &str) {
    out.push(b'-');
    out.extend(
        msg.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Appends an integer reply.
pub fn integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends a bulk string reply, or the null bulk string for `None`.
pub fn bulk(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => {
            out.push(b'$');
            out.extend_from_slice(v.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        None => out.extend_from_slice(b"$-1\r\n"),
    }
}

/// Appends an array header for `n` elements.
pub fn array(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    type Owned = Result<Option<(Vec<Vec<u8>>, usize)>, RespError>;

    fn owned(r: Result<Option<Request<'_>>, RespError>) -> Owned {
        r.map(|o| o.map(|(a, n)| (a.into_iter().map(<[u8]>::to_vec).collect(), n)))
    }

    #[test]
    fn multibulk_and_inline() {
        let m = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let (args, n) = parse_request(m, DEFAULT_MAX_BULK).unwrap().unwrap();
        assert_eq!((args, n), (vec![&b"SET"[..], b"k", b"hello"], m.len()));
        let (args, n) = parse_request(b"PING  hi\r\nrest", DEFAULT_MAX_BULK)
            .unwrap()
            .unwrap();
        assert_eq!((args, n), (vec![&b"PING"[..], b"hi"], 10));
        let (args, _) = parse_request(b"\r\n", DEFAULT_MAX_BULK).unwrap().unwrap();
        assert!(args.is_empty());
    }

    #[test]
    fn every_split_point_is_incomplete_until_the_end() {
        let m: &[u8] = b"*2\r\n$4\r\nECHO\r\n$11\r\nhello world\r\n";
        for cut in 0..m.len() {
            assert_eq!(
                owned(parse_request(&m[..cut], DEFAULT_MAX_BULK)),
                Ok(None),
                "cut at {cut}"
            );
        }
        assert!(parse_request(m, DEFAULT_MAX_BULK).unwrap().is_some());
        let i: &[u8] = b"GET key\r\n";
        for cut in 0..i.len() - 1 {
            assert_eq!(
                owned(parse_request(&i[..cut], DEFAULT_MAX_BULK)),
                Ok(None),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn bad_lengths_and_numbers_are_errors() {
        for bad in [
            &b"*x\r\n"[..],
            b"*2\r\n$-5\r\nab\r\n",
            b"*1\r\n$99999999999999999999\r\n",
            b"*1\r\n$3\r\nabcd\r\n",
            b"*1\r\n:3\r\n",
            b"*1\r\n$\r\n",
            b"*9999999999\r\n",
            b"*1\r\n$--1\r\n",
            // Found by the `resp` fuzz target: 19 digits overflowed an i64.
            b"*9999999999999999999\r\n",
            b"*1\r\n$9999999999999999999\r\n",
        ] {
            assert!(
                parse_request(bad, DEFAULT_MAX_BULK).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Over the configured maximum, before any of it arrived.
        assert!(parse_request(b"*1\r\n$1000\r\n", 999).is_err());
        assert_eq!(owned(parse_request(b"*1\r\n$1000\r\n", 1000)), Ok(None));
        // An inline line that never ends is cut off.
        assert!(parse_request(&vec![b'a'; MAX_LINE + 1], DEFAULT_MAX_BULK).is_err());
        assert_eq!(
            owned(parse_request(b"*-1\r\n", DEFAULT_MAX_BULK)),
            Ok(Some((vec![], 5)))
        );
    }

    #[test]
    fn replies_encode() {
        let mut o = Vec::new();
        simple(&mut o, "OK");
        error(&mut o, "ERR bad\r\nthing");
        integer(&mut o, -3);
        bulk(&mut o, Some(b"v"));
        bulk(&mut o, None);
        array(&mut o, 2);
        assert_eq!(
            o,
            b"+OK\r\n-ERR bad  thing\r\n:-3\r\n$1\r\nv\r\n$-1\r\n*2\r\n"
        );
    }
}
