//! Reading integer kernel settings by name with `sysctlbyname(3)` (macOS and
//! the BSDs), such as `net.inet.ip.portrange.first`.

use std::ffi::CString;

use super::error::{last_errno, Error, Result};

/// Reads an integer setting (`sysctlbyname(3)`).
///
/// # Errors
///
/// `ENOENT` for a name the kernel doesn't know, `EINVAL` for a name with a
/// NUL byte.
///
/// # References
///
/// ```c
/// int sysctlbyname(const char *name, void *oldp, size_t *oldlenp, const void *newp, size_t newlen);
/// ```
///
/// - `sysctlbyname(3)`: [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=sysctlbyname&sektion=3), [macOS](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man3/sysctlbyname.3.html)
#[doc(alias = "sysctlbyname")]
pub fn sysctl_int(name: &str) -> Result<i64> {
    let c = CString::new(name).map_err(|_| Error::invalid_input("sysctlbyname", name))?;
    let mut buf = [0u8; 8];
    let mut len: libc::size_t = buf.len();
    // SAFETY: `c` is a NUL-terminated name; `buf` and `len` are live locals
    // and `len` holds the buffer's size, so the kernel writes at most that.
    let rc = unsafe {
        libc::sysctlbyname(
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        return Err(Error::new("sysctlbyname", name, last_errno()));
    }
    Ok(match len {
        4 => i64::from(i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]])),
        8 => i64::from_ne_bytes(buf),
        2 => i64::from(i16::from_ne_bytes([buf[0], buf[1]])),
        _ => {
            return Err(Error::new(
                "sysctlbyname",
                format!("{name}: {len}-byte value"),
                libc::EINVAL,
            ))
        }
    })
}
