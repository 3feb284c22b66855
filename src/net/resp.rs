//! The Redis protocol, RESP2 and RESP3: requests (multibulk `*N` arrays of
//! `$len` bulk strings, or inline lines of space-separated words) parsed
//! incrementally from a connection's input, replies encoded in either
//! version, and replies parsed back ([`parse_reply`], for clients and tests).
//!
//! A connection speaks RESP2 until it asks for RESP3 (`HELLO 3`); the
//! encoders that differ between the two take a [`Version`] and write the
//! RESP2 form of a RESP3 type the way Redis does (a map as a flat array, a
//! double as a bulk string, a boolean as an integer, every null as `$-1`
//! or `*-1`).
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

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// Its arguments, the command first, borrowed from the input.
    pub args: Vec<&'a [u8]>,
    /// How many input bytes it took.
    pub consumed: usize,
}

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

/// Parses one request at the start of `input`: `Ok(Some(request))`,
/// `Ok(None)` while incomplete (nothing is allocated for
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
        return Ok(Some(Request {
            args,
            consumed: end + 1,
        }));
    }
    let Some((head, mut at)) = line(input, 1)? else {
        return Ok(None);
    };
    let n = number(head, "multibulk length")?;
    if n <= 0 {
        return Ok(Some(Request {
            args: Vec::new(),
            consumed: at,
        }));
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
        let Some((arg, end)) = blob(input, len, next, max_bulk)? else {
            return Ok(None);
        };
        args.push(arg);
        at = end;
    }
    Ok(Some(Request { args, consumed: at }))
}

/// Appends `n` in decimal, without allocating.
fn decimal(out: &mut Vec<u8>, n: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends a simple string reply (`+OK`).
pub fn simple(out: &mut Vec<u8>, s: &str) {
    out.push(b'+');
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends an error reply (`-ERR ...`); line breaks in `msg` become spaces.
pub fn error(out: &mut Vec<u8>, msg: &str) {
    error_bytes(out, msg.as_bytes());
}

/// [`error`] for a message that need not be UTF-8.
fn error_bytes(out: &mut Vec<u8>, msg: &[u8]) {
    out.push(b'-');
    out.extend(
        msg.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Appends `kind`, `n` in decimal and CRLF: an integer reply or the header
/// of a string or an aggregate.
fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    decimal(out, n as i64);
    out.extend_from_slice(b"\r\n");
}

/// Appends an integer reply.
pub fn integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends a bulk string reply, or the null bulk string for `None`.
pub fn bulk(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => {
            header(out, b'$', v.len());
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        None => out.extend_from_slice(b"$-1\r\n"),
    }
}

/// Appends an array header for `n` elements.
pub fn array(out: &mut Vec<u8>, n: usize) {
    header(out, b'*', n);
}

/// The protocol version a connection speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Version {
    /// RESP2, what every connection starts with.
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

impl Version {
    /// The version's number as `HELLO` names it (2 or 3).
    pub fn number(self) -> i64 {
        match self {
            Version::Resp2 => 2,
            Version::Resp3 => 3,
        }
    }
}

/// Appends the null reply: `_` in RESP3, the null bulk string `$-1` in
/// RESP2.
pub fn null(out: &mut Vec<u8>, v: Version) {
    match v {
        Version::Resp2 => out.extend_from_slice(b"$-1\r\n"),
        Version::Resp3 => out.extend_from_slice(b"_\r\n"),
    }
}

/// Appends the null that stands for a missing array: `_` in RESP3, `*-1`
/// in RESP2.
pub fn null_array(out: &mut Vec<u8>, v: Version) {
    match v {
        Version::Resp2 => out.extend_from_slice(b"*-1\r\n"),
        Version::Resp3 => out.extend_from_slice(b"_\r\n"),
    }
}

/// Appends a bulk string, or the version's null for `None`.
pub fn bulk_or_null(out: &mut Vec<u8>, value: Option<&[u8]>, v: Version) {
    match value {
        Some(_) => bulk(out, value),
        None => null(out, v),
    }
}

/// Appends a map header for `n` key-value pairs (`%n`); in RESP2 an array
/// of `2n` elements, keys and values alternating.
pub fn map(out: &mut Vec<u8>, n: usize, v: Version) {
    match v {
        Version::Resp2 => header(out, b'*', 2 * n),
        Version::Resp3 => header(out, b'%', n),
    }
}

/// Appends a set header for `n` elements (`~n`); in RESP2 an array.
pub fn set(out: &mut Vec<u8>, n: usize, v: Version) {
    match v {
        Version::Resp2 => header(out, b'*', n),
        Version::Resp3 => header(out, b'~', n),
    }
}

/// Appends a double (`,1.5`, `,inf`, `,-inf`, `,nan`); in RESP2 a bulk
/// string of the same text. Finite values print in the shortest form that
/// reads back to the same `f64`.
pub fn double(out: &mut Vec<u8>, d: f64, v: Version) {
    let text = format_double(d);
    match v {
        Version::Resp2 => bulk(out, Some(text.as_bytes())),
        Version::Resp3 => {
            out.push(b',');
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// A double as Redis prints it: `inf`, `-inf`, `nan`, or the shortest
/// decimal that reads back to the same value (no exponent).
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        "nan".to_string()
    } else if d.is_infinite() {
        if d == f64::INFINITY { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{d}")
    }
}

/// Appends a boolean (`#t`, `#f`); in RESP2 the integer 1 or 0.
pub fn boolean(out: &mut Vec<u8>, b: bool, v: Version) {
    match v {
        Version::Resp2 => integer(out, i64::from(b)),
        Version::Resp3 => out.extend_from_slice(if b { b"#t\r\n" } else { b"#f\r\n" }),
    }
}

/// Appends a verbatim string (`=len\r\ntxt:...`, `format` being three
/// bytes such as `txt`); in RESP2 a bulk string of `text`.
pub fn verbatim(out: &mut Vec<u8>, format: &[u8; 3], text: &[u8], v: Version) {
    match v {
        Version::Resp2 => bulk(out, Some(text)),
        Version::Resp3 => {
            header(out, b'=', text.len() + 4);
            out.extend_from_slice(format);
            out.push(b':');
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// The deepest nesting of aggregates [`parse_reply`] accepts.
pub const MAX_DEPTH: usize = 64;

/// A parsed reply, borrowing its strings from the input.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    /// `+text`
    Simple(&'a [u8]),
    /// `-text`, or the blob error `!len`
    Error(&'a [u8]),
    /// `:n`
    Integer(i64),
    /// `$len`
    Bulk(&'a [u8]),
    /// `$-1`, `*-1` or `_`
    Null,
    /// `*n`
    Array(Vec<Value<'a>>),
    /// `%n`
    Map(Vec<(Value<'a>, Value<'a>)>),
    /// `~n`
    Set(Vec<Value<'a>>),
    /// `>n`, an out-of-band push
    Push(Vec<Value<'a>>),
    /// `,d`
    Double(f64),
    /// `#t` or `#f`
    Boolean(bool),
    /// `=len` with its three-byte format and the text after the colon
    Verbatim(&'a [u8; 3], &'a [u8]),
    /// `(digits`
    BigNumber(&'a [u8]),
}

impl Value<'_> {
    /// Appends this value's encoding in RESP3 (the form [`parse_reply`]
    /// reads back to an equal value), or its RESP2 rendering.
    pub fn encode(&self, out: &mut Vec<u8>, v: Version) {
        match self {
            Value::Simple(s) => {
                out.push(b'+');
                out.extend_from_slice(s);
                out.extend_from_slice(b"\r\n");
            }
            Value::Error(s) => match v {
                Version::Resp3
                    if s.len() > MAX_LINE || s.iter().any(|&c| c == b'\r' || c == b'\n') =>
                {
                    header(out, b'!', s.len());
                    out.extend_from_slice(s);
                    out.extend_from_slice(b"\r\n");
                }
                _ => error_bytes(out, s),
            },
            Value::Integer(n) => integer(out, *n),
            Value::Bulk(b) => bulk(out, Some(b)),
            Value::Null => null(out, v),
            Value::Array(items) => {
                array(out, items.len());
                items.iter().for_each(|i| i.encode(out, v));
            }
            Value::Map(pairs) => {
                map(out, pairs.len(), v);
                for (k, val) in pairs {
                    k.encode(out, v);
                    val.encode(out, v);
                }
            }
            Value::Set(items) => {
                set(out, items.len(), v);
                items.iter().for_each(|i| i.encode(out, v));
            }
            Value::Push(items) => {
                match v {
                    Version::Resp2 => array(out, items.len()),
                    Version::Resp3 => header(out, b'>', items.len()),
                }
                items.iter().for_each(|i| i.encode(out, v));
            }
            Value::Double(d) => double(out, *d, v),
            Value::Boolean(b) => boolean(out, *b, v),
            Value::Verbatim(f, t) => verbatim(out, f, t, v),
            Value::BigNumber(d) => match v {
                Version::Resp2 => bulk(out, Some(d)),
                Version::Resp3 => {
                    out.push(b'(');
                    out.extend_from_slice(d);
                    out.extend_from_slice(b"\r\n");
                }
            },
        }
    }
}

/// A parsed reply and how many input bytes it took.
pub type Reply<'a> = (Value<'a>, usize);

/// Parses one reply (RESP2 or RESP3) at the start of `input`:
/// `Ok(Some((value, consumed)))`, `Ok(None)` while incomplete, or an error
/// for a malformed one. Strings longer than `max_bulk`, more than
/// [`MAX_ARGS`] elements in one aggregate, or nesting deeper than
/// [`MAX_DEPTH`] are errors; nothing is allocated for an announced length
/// before its elements arrive. Attributes (`|`) are refused.
pub fn parse_reply(input: &[u8], max_bulk: usize) -> Result<Option<Reply<'_>>, RespError> {
    reply_at(input, 0, max_bulk, 0)
}

/// A `len`-byte string at `at` followed by CRLF (a request's argument or a
/// reply's bulk string): the string and where the next item starts, `None`
/// while incomplete; a negative length or one over `max_bulk` is an error.
fn blob(
    input: &[u8],
    len: i64,
    at: usize,
    max_bulk: usize,
) -> Result<Option<(&[u8], usize)>, RespError> {
    if len < 0 || len as u64 > max_bulk as u64 {
        return err("invalid bulk length");
    }
    let len = len as usize;
    if input.len() < at + len + 2 {
        return Ok(None);
    }
    if &input[at + len..at + len + 2] != b"\r\n" {
        return err("bulk string not followed by CRLF");
    }
    Ok(Some((&input[at..at + len], at + len + 2)))
}

fn reply_at(
    input: &[u8],
    at: usize,
    max_bulk: usize,
    depth: usize,
) -> Result<Option<(Value<'_>, usize)>, RespError> {
    let Some(&kind) = input.get(at) else {
        return Ok(None);
    };
    let Some((text, next)) = line(input, at + 1)? else {
        return Ok(None);
    };
    let value = match kind {
        b'+' => Value::Simple(text),
        b'-' => Value::Error(text),
        b':' => Value::Integer(number(text, "integer")?),
        b'_' if text.is_empty() => Value::Null,
        b'#' => match text {
            b"t" => Value::Boolean(true),
            b"f" => Value::Boolean(false),
            _ => return err("invalid boolean"),
        },
        b',' => Value::Double(parse_double(text)?),
        b'(' => {
            let digits = text.strip_prefix(b"-").unwrap_or(text);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return err("invalid big number");
            }
            Value::BigNumber(text)
        }
        b'$' | b'!' | b'=' => {
            let len = number(text, "bulk length")?;
            if kind == b'$' && len == -1 {
                return Ok(Some((Value::Null, next)));
            }
            let Some((body, end)) = blob(input, len, next, max_bulk)? else {
                return Ok(None);
            };
            let value = match kind {
                b'$' => Value::Bulk(body),
                b'!' => Value::Error(body),
                _ => match body.split_first_chunk::<3>() {
                    Some((format, [b':', text @ ..]))
                        if format.iter().all(u8::is_ascii_alphanumeric) =>
                    {
                        Value::Verbatim(format, text)
                    }
                    _ => return err("invalid verbatim string"),
                },
            };
            return Ok(Some((value, end)));
        }
        b'*' | b'%' | b'~' | b'>' => {
            let n = number(text, "multibulk length")?;
            if kind == b'*' && n == -1 {
                return Ok(Some((Value::Null, next)));
            }
            if n < 0 || n as u64 > MAX_ARGS as u64 {
                return err("invalid multibulk length");
            }
            if depth >= MAX_DEPTH {
                return err("nesting too deep");
            }
            let count = if kind == b'%' {
                2 * n as usize
            } else {
                n as usize
            };
            // Grow with what arrives, not with what is announced.
            let mut items = Vec::new();
            let mut at = next;
            for _ in 0..count {
                let Some((item, end)) = reply_at(input, at, max_bulk, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                at = end;
            }
            let value = match kind {
                b'*' => Value::Array(items),
                b'~' => Value::Set(items),
                b'>' => Value::Push(items),
                _ => {
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    Value::Map(pairs)
                }
            };
            return Ok(Some((value, at)));
        }
        c => return err(format!("unexpected reply type '{}'", char::from(c))),
    };
    Ok(Some((value, next)))
}

fn parse_double(text: &[u8]) -> Result<f64, RespError> {
    match text {
        b"inf" | b"+inf" => return Ok(f64::INFINITY),
        b"-inf" => return Ok(f64::NEG_INFINITY),
        b"nan" | b"-nan" => return Ok(f64::NAN),
        _ => {}
    }
    let ok = !text.is_empty()
        && text
            .iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E'))
        && text.iter().any(u8::is_ascii_digit);
    std::str::from_utf8(text)
        .ok()
        .filter(|_| ok)
        .and_then(|t| t.parse::<f64>().ok())
        .ok_or_else(|| RespError("invalid double".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Owned = Result<Option<(Vec<Vec<u8>>, usize)>, RespError>;

    fn owned(r: Result<Option<Request<'_>>, RespError>) -> Owned {
        r.map(|o| {
            o.map(|r| {
                let args = r.args.into_iter().map(<[u8]>::to_vec).collect();
                (args, r.consumed)
            })
        })
    }

    #[test]
    fn multibulk_and_inline() {
        let m = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let Request { args, consumed: n } = parse_request(m, DEFAULT_MAX_BULK).unwrap().unwrap();
        assert_eq!((args, n), (vec![&b"SET"[..], b"k", b"hello"], m.len()));
        let Request { args, consumed: n } = parse_request(b"PING  hi\r\nrest", DEFAULT_MAX_BULK)
            .unwrap()
            .unwrap();
        assert_eq!((args, n), (vec![&b"PING"[..], b"hi"], 10));
        let Request { args, .. } = parse_request(b"\r\n", DEFAULT_MAX_BULK).unwrap().unwrap();
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
    fn limits_hold_exactly_at_their_bounds() {
        // An empty bulk string is an argument.
        assert_eq!(
            owned(parse_request(b"*1\r\n$0\r\n\r\n", DEFAULT_MAX_BULK)),
            Ok(Some((vec![vec![]], 10)))
        );
        // 1,048,576 arguments may be announced, one more may not.
        assert_eq!(
            owned(parse_request(b"*1048576\r\n", DEFAULT_MAX_BULK)),
            Ok(None)
        );
        assert!(parse_request(b"*1048577\r\n", DEFAULT_MAX_BULK).is_err());
        // 64 KiB, as documented.
        assert_eq!(
            owned(parse_request(&[b'a'; 65536], DEFAULT_MAX_BULK)),
            Ok(None)
        );
        // An inline request of exactly MAX_LINE bytes, one more is refused,
        // whether or not its end has arrived.
        let mut at = vec![b'a'; MAX_LINE];
        assert_eq!(owned(parse_request(&at, DEFAULT_MAX_BULK)), Ok(None));
        at.push(b'\n');
        assert!(parse_request(&at, DEFAULT_MAX_BULK).unwrap().is_some());
        let mut over = vec![b'a'; MAX_LINE + 1];
        assert!(parse_request(&over, DEFAULT_MAX_BULK).is_err());
        over.push(b'\n');
        assert!(parse_request(&over, DEFAULT_MAX_BULK).is_err());
        // The same for a line of a reply (a simple string).
        let mut line = vec![b'+'];
        line.extend(std::iter::repeat(b'x').take(MAX_LINE));
        assert_eq!(parse_reply(&line, 10), Ok(None));
        line.extend_from_slice(b"\r\n");
        assert!(parse_reply(&line, 10).unwrap().is_some());
        let mut long = vec![b'+'];
        long.extend(std::iter::repeat(b'x').take(MAX_LINE + 1));
        assert!(parse_reply(&long, 10).is_err());
        long.extend_from_slice(b"\r\n");
        assert!(parse_reply(&long, 10).is_err());
        // Numbers: 19 digits at most, however small their value.
        assert_eq!(
            parse_reply(b":1000000000000000000\r\n", 10)
                .unwrap()
                .unwrap()
                .0,
            Value::Integer(1_000_000_000_000_000_000)
        );
        assert!(parse_reply(b":00000000000000000001\r\n", 10).is_err());
        assert!(parse_reply(b":\r\n", 10).is_err());
        assert_eq!(RespError("bad".into()).to_string(), "Protocol error: bad");
    }

    #[test]
    fn integers_encode_at_their_bounds() {
        for n in [0, 7, -7, 10, -10, 1234567890, i64::MAX, i64::MIN] {
            let mut o = Vec::new();
            integer(&mut o, n);
            assert_eq!(o, format!(":{n}\r\n").as_bytes());
        }
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

    #[test]
    fn resp3_encoders_and_their_resp2_forms() {
        let enc = |v: Version| {
            let mut o = Vec::new();
            null(&mut o, v);
            null_array(&mut o, v);
            bulk_or_null(&mut o, None, v);
            bulk_or_null(&mut o, Some(b"x"), v);
            map(&mut o, 2, v);
            set(&mut o, 3, v);
            double(&mut o, 1.5, v);
            double(&mut o, f64::NEG_INFINITY, v);
            boolean(&mut o, true, v);
            boolean(&mut o, false, v);
            verbatim(&mut o, b"txt", b"hi", v);
            String::from_utf8(o).unwrap()
        };
        assert_eq!(
            enc(Version::Resp3),
            "_\r\n_\r\n_\r\n$1\r\nx\r\n%2\r\n~3\r\n,1.5\r\n,-inf\r\n#t\r\n#f\r\n=6\r\ntxt:hi\r\n"
        );
        assert_eq!(
            enc(Version::Resp2),
            "$-1\r\n*-1\r\n$-1\r\n$1\r\nx\r\n*4\r\n*3\r\n$3\r\n1.5\r\n$4\r\n-inf\r\n:1\r\n:0\r\n$2\r\nhi\r\n"
        );
        assert_eq!(format_double(f64::NAN), "nan");
        assert_eq!(format_double(f64::INFINITY), "inf");
        assert_eq!(format_double(3.0), "3");
        assert_eq!(format_double(0.1 + 0.2), "0.30000000000000004");
        assert_eq!((Version::Resp2.number(), Version::Resp3.number()), (2, 3));
        assert_eq!(Version::default(), Version::Resp2);
    }

    fn reply(input: &[u8]) -> Value<'_> {
        let (v, n) = parse_reply(input, 100).unwrap().unwrap();
        assert_eq!(n, input.len(), "{:?}", String::from_utf8_lossy(input));
        v
    }

    #[test]
    fn replies_parse() {
        assert_eq!(reply(b"+OK\r\n"), Value::Simple(b"OK"));
        assert_eq!(reply(b"-ERR x\r\n"), Value::Error(b"ERR x"));
        assert_eq!(reply(b"!5\r\nERR\r\n\r\n"), Value::Error(b"ERR\r\n"));
        assert_eq!(reply(b":-12\r\n"), Value::Integer(-12));
        assert_eq!(reply(b"$0\r\n\r\n"), Value::Bulk(b""));
        assert_eq!(reply(b"$-1\r\n"), Value::Null);
        assert_eq!(reply(b"*-1\r\n"), Value::Null);
        assert_eq!(reply(b"_\r\n"), Value::Null);
        assert_eq!(reply(b"#t\r\n"), Value::Boolean(true));
        assert_eq!(reply(b"#f\r\n"), Value::Boolean(false));
        assert_eq!(reply(b",-2.5e1\r\n"), Value::Double(-25.0));
        assert_eq!(reply(b",inf\r\n"), Value::Double(f64::INFINITY));
        assert_eq!(reply(b",-inf\r\n"), Value::Double(f64::NEG_INFINITY));
        assert!(matches!(reply(b",nan\r\n"), Value::Double(d) if d.is_nan()));
        assert_eq!(reply(b"(-123\r\n"), Value::BigNumber(b"-123"));
        assert_eq!(reply(b"=7\r\ntxt:a b\r\n"), Value::Verbatim(b"txt", b"a b"));
        assert_eq!(
            reply(b"*2\r\n:1\r\n*1\r\n+a\r\n"),
            Value::Array(vec![
                Value::Integer(1),
                Value::Array(vec![Value::Simple(b"a")])
            ])
        );
        assert_eq!(
            reply(b"%2\r\n+a\r\n:1\r\n+b\r\n_\r\n"),
            Value::Map(vec![
                (Value::Simple(b"a"), Value::Integer(1)),
                (Value::Simple(b"b"), Value::Null)
            ])
        );
        assert_eq!(reply(b"~1\r\n:1\r\n"), Value::Set(vec![Value::Integer(1)]));
        assert_eq!(reply(b">1\r\n:1\r\n"), Value::Push(vec![Value::Integer(1)]));
        assert_eq!(reply(b"*0\r\n"), Value::Array(vec![]));
        // Only the first reply is taken.
        assert_eq!(parse_reply(b":1\r\n:2\r\n", 100).unwrap().unwrap().1, 4);
    }

    #[test]
    fn replies_are_incomplete_at_every_split_point() {
        let m: &[u8] = b"*3\r\n%1\r\n$1\r\nk\r\n=5\r\ntxt:v\r\n,1.5\r\n~1\r\n#t\r\n";
        for cut in 0..m.len() {
            assert_eq!(parse_reply(&m[..cut], 100), Ok(None), "cut at {cut}");
        }
        assert!(parse_reply(m, 100).unwrap().is_some());
    }

    #[test]
    fn bad_replies_are_errors() {
        for bad in [
            &b"?\r\n"[..],
            b"|1\r\n+a\r\n+b\r\n+c\r\n",
            b"_x\r\n",
            b"#x\r\n",
            b"#\r\n",
            b",\r\n",
            b",1.5x\r\n",
            b",e\r\n",
            b",infinity\r\n",
            b"(\r\n",
            b"(-\r\n",
            b"(12a\r\n",
            b":x\r\n",
            b"$-2\r\n",
            b"$101\r\n",
            b"$1\r\nab\r\n",
            b"=3\r\ntxt\r\n",
            b"=5\r\ntx:ab\r\n",
            b"=5\r\nt-t:a\r\n",
            b"!-1\r\n",
            b"*-2\r\n",
            b"%-1\r\n",
            b"~9999999999\r\n",
            b"*1\r\n?\r\n",
        ] {
            assert!(
                parse_reply(bad, 100).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Exactly the bulk limit is fine, one more is not.
        let at_limit = format!("${}\r\n{}\r\n", 100, "a".repeat(100));
        assert!(parse_reply(at_limit.as_bytes(), 100).unwrap().is_some());
        let deep = "*1\r\n".repeat(MAX_DEPTH) + ":1\r\n";
        assert!(parse_reply(deep.as_bytes(), 100).unwrap().is_some());
        let deeper = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
        assert!(parse_reply(deeper.as_bytes(), 100).is_err());
    }

    #[test]
    fn values_round_trip_through_resp3() {
        let v = reply(
            b"*9\r\n+a\r\n-e\r\n!2\r\n\r\n\r\n:7\r\n$1\r\nb\r\n_\r\n%1\r\n#t\r\n,0.5\r\n>1\r\n=5\r\nmkd:x\r\n(9\r\n",
        );
        let mut o = Vec::new();
        v.encode(&mut o, Version::Resp3);
        assert_eq!(reply(&o), v);
        let mut o2 = Vec::new();
        v.encode(&mut o2, Version::Resp2);
        assert_eq!(
            String::from_utf8(o2).unwrap(),
            "*9\r\n+a\r\n-e\r\n-  \r\n:7\r\n$1\r\nb\r\n$-1\r\n*2\r\n:1\r\n$3\r\n0.5\r\n*1\r\n$1\r\nx\r\n$1\r\n9\r\n"
        );
        let mut o3 = Vec::new();
        Value::Set(vec![Value::Null]).encode(&mut o3, Version::Resp3);
        assert_eq!(o3, b"~1\r\n_\r\n");
    }
}
