//! Glob patterns as Redis's KEYS, SCAN MATCH and CONFIG GET match them:
//! `*` any run of bytes, `?` one byte, `[abc]`, `[^abc]` and `[a-z]` sets
//! (a reversed range is swapped; an unclosed set ends at the pattern's
//! end), and `\x` for a literal `x` (a trailing `\` is itself).
//!
//! Unlike Redis's recursive matcher, which is exponential in the number of
//! stars, this one backtracks only to the last star: every element matches
//! exactly one byte, so trying the last star's next position is enough, and
//! a match costs at most the pattern's length times the string's.
//!
//! Its tests run in `tests/cache_server.rs`, which includes this file.

/// One element at `p`: whether it matches `c`, and where the next starts.
fn element(pat: &[u8], mut p: usize, c: u8) -> (bool, usize) {
    match pat[p] {
        b'?' => (true, p + 1),
        b'\\' if p + 1 < pat.len() => (pat[p + 1] == c, p + 2),
        b'[' => {
            p += 1;
            let negate = pat.get(p) == Some(&b'^');
            if negate {
                p += 1;
            }
            let mut hit = false;
            while p < pat.len() && pat[p] != b']' {
                if pat[p] == b'\\' && p + 1 < pat.len() {
                    hit |= pat[p + 1] == c;
                    p += 2;
                } else if p + 2 < pat.len() && pat[p + 1] == b'-' {
                    let (a, b) = (pat[p].min(pat[p + 2]), pat[p].max(pat[p + 2]));
                    hit |= (a..=b).contains(&c);
                    p += 3;
                } else {
                    hit |= pat[p] == c;
                    p += 1;
                }
            }
            // Past the `]` (or at the end of an unclosed set).
            (hit != negate, (p + 1).min(pat.len()))
        }
        lit => (lit == c, p + 1),
    }
}

/// Whether `s` matches the glob `pat`.
pub fn matches(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    // The position after the last star, and the string position it covers up to.
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p < pat.len() && pat[p] == b'*' {
            while p < pat.len() && pat[p] == b'*' {
                p += 1;
            }
            if p == pat.len() {
                return true;
            }
            star = Some((p, i));
            continue;
        }
        if i == s.len() {
            return p == pat.len();
        }
        if p < pat.len() {
            let (hit, next) = element(pat, p, s[i]);
            if hit {
                p = next;
                i += 1;
                continue;
            }
        }
        // Mismatch (or pattern used up with string left): the last star
        // takes one more byte.
        match star {
            Some((sp, si)) if si < s.len() => {
                star = Some((sp, si + 1));
                p = sp;
                i = si + 1;
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn as_redis_matches() {
        for (pat, s, want) in [
            ("*", "", true),
            ("*", "anything", true),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "hllo", true),
            ("h*llo", "heeeello", true),
            ("h*llo", "heeeellox", false),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hbllo", true),
            ("h[a-b]llo", "hcllo", false),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hello", false),
            ("a\\", "a\\", true),
            ("[\\]]", "]", true),
            ("[abc", "b", true),
            ("[abc", "bc", false),
            ("[]", "a", false),
            ("user:*:name", "user:42:name", true),
            ("user:*:name", "user:42:nam", false),
            ("*a*b*c", "xxaxxbxxc", true),
            ("*a*b*c", "xxaxxcxxb", false),
            ("a*", "b", false),
            ("", "", true),
            ("", "a", false),
            ("?", "", false),
            ("**x", "abx", true),
        ] {
            assert_eq!(
                matches(pat.as_bytes(), s.as_bytes()),
                want,
                "{pat:?} ~ {s:?}"
            );
        }
    }

    #[test]
    fn many_stars_end() {
        // With backtracking into every star this would not end in our
        // lifetime; here it is 61 x 10,000 steps at most.
        let pat = "*a".repeat(30) + "b";
        let s = "a".repeat(10_000);
        assert!(!matches(pat.as_bytes(), s.as_bytes()));
        assert!(matches(pat.as_bytes(), (s + "b").as_bytes()));
    }
}
