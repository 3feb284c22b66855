//! A persistent registry of name -> port associations, file-compatible with
//! port-for's `/etc/port-for.conf`: a Python ConfigParser INI file with the
//! associations as `name = port` lines in its `[DEFAULT]` section, names
//! compared case-insensitively and stored lower-cased.
//!
//! Unlike port-for, it is safe to use from many processes at once and to
//! kill at any moment: writers serialise on a lock file next to the
//! registry; each write goes to a temporary file in the same directory, is
//! fsynced and renamed over the old file, and the directory is fsynced, so
//! the file is always the old one or the new one, whole. Lines it doesn't
//! touch (comments, other sections) are kept as they are. A malformed file
//! is an error naming the line, and is never rewritten.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::good::select_random;
use crate::sys::fd::{can_write, fsync, lock_exclusive};
use crate::sys::{errno, Error};

/// The system-wide registry port-for uses.
pub const SYSTEM_PATH: &str = "/etc/port-for.conf";
/// The environment variable that overrides the registry's path.
pub const PATH_VARIABLE: &str = "PORT_FOR_CONF";

/// What went wrong with the registry.
#[derive(Debug)]
#[non_exhaustive]
pub enum RegistryError {
    /// A system call failed (the error names the call and the path).
    Sys(Error),
    /// The file is malformed at this line; it was left unchanged.
    Parse {
        /// The registry file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A name that can't be stored (port-for would lose it).
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it can't be stored.
        reason: &'static str,
    },
    /// A port that is not a number from 1 to 65535.
    InvalidPort(String),
    /// The name holds another port.
    NameHoldsOtherPort {
        /// The name.
        name: String,
        /// The port it holds.
        held: u16,
        /// The port asked for.
        requested: u16,
    },
    /// The port belongs to another name.
    PortTaken {
        /// The port.
        port: u16,
        /// The name that holds it.
        holder: String,
    },
}

impl RegistryError {
    /// Whether the registry file may not be read or written here
    /// (`EACCES`, `EPERM`, `EROFS`): another file is the way out.
    pub fn is_permission(&self) -> bool {
        matches!(self, Self::Sys(e) if matches!(e.raw_os_error(), errno::EACCES | errno::EPERM | errno::EROFS))
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sys(e) => {
                write!(f, "{e}")?;
                if self.is_permission() {
                    write!(f, " (choose another registry file with ${PATH_VARIABLE})")?;
                }
                Ok(())
            }
            Self::Parse { path, line, reason } => {
                write!(f, "{}:{line}: {reason} (the file was left unchanged)", path.display())
            }
            Self::InvalidName { name, reason } => write!(f, "invalid name {name:?}: {reason}"),
            Self::InvalidPort(p) => write!(f, "invalid port {p:?}: a port is a number from 1 to 65535"),
            Self::NameHoldsOtherPort { name, held, requested } => write!(
                f,
                "can't bind {name} to port {requested}: {name} is already associated with port {held}"
            ),
            Self::PortTaken { port, holder } => write!(f, "port {port} is already used by {holder}"),
        }
    }
}

impl std::error::Error for RegistryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Sys(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for RegistryError {
    fn from(e: Error) -> Self {
        Self::Sys(e)
    }
}

/// The result type of registry operations.
pub type Result<T> = std::result::Result<T, RegistryError>;

fn io_error(call: &'static str, path: &Path, e: &io::Error) -> RegistryError {
    RegistryError::Sys(Error::new(
        call,
        path.display(),
        e.raw_os_error().unwrap_or(errno::EINVAL),
    ))
}

/// Checks that `name` can be stored and read back by port-for's parser,
/// returning it lower-cased.
pub fn check_name(name: &str) -> Result<String> {
    let bad = |reason| {
        Err(RegistryError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("a name can't be empty");
    }
    if name.contains(['=', ':']) {
        return bad("a name can't contain '=' or ':'");
    }
    if name.contains(['\n', '\r']) {
        return bad("a name can't contain a line break");
    }
    if name.starts_with(['[', '#', ';']) {
        return bad("a name can't begin with '[', '#' or ';'");
    }
    if name.trim() != name {
        return bad("a name can't begin or end with white space");
    }
    Ok(name.to_lowercase())
}

/// Parses a port given as text: 1 to 65535.
pub fn parse_port(s: &str) -> Result<u16> {
    match s.trim().parse::<u16>() {
        Ok(p) if p != 0 && s.trim().bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(RegistryError::InvalidPort(s.to_string())),
    }
}

/// One association in the file.
#[derive(Clone, Debug)]
struct Entry {
    name: String,
    port: u16,
    /// Index into `Doc::lines`.
    line: usize,
}

/// The file as lines, with the `[DEFAULT]` associations found in it.
#[derive(Debug, Default)]
struct Doc {
    lines: Vec<String>,
    entries: Vec<Entry>,
    /// Where a new association goes (after the last line of `[DEFAULT]`),
    /// or `None` when there is no `[DEFAULT]` section yet.
    insert_at: Option<usize>,
}

impl Doc {
    /// Parses the way ConfigParser does, for the parts port-for uses:
    /// `[section]` headers, `key = value` / `key: value` options, `#` and `;`
    /// comment lines, blank lines, and indented continuation lines.
    fn parse(path: &Path, text: &str) -> Result<Doc> {
        let err = |line: usize, reason: String| RegistryError::Parse {
            path: path.to_path_buf(),
            line: line + 1,
            reason,
        };
        let mut doc = Doc {
            lines: text.lines().map(str::to_string).collect(),
            ..Doc::default()
        };
        let mut section: Option<String> = None;
        let mut seen_sections: Vec<String> = Vec::new();
        let mut last_option_line: Option<usize> = None;
        for (i, raw) in doc.lines.iter().enumerate() {
            let t = raw.trim();
            if t.is_empty() {
                // A blank line ends a value here (ConfigParser would let an
                // indented line after it continue the value; no port value
                // spans lines either way).
                last_option_line = None;
                continue;
            }
            if t.starts_with('#') || t.starts_with(';') {
                continue;
            }
            if raw.starts_with([' ', '\t']) && last_option_line.is_some() {
                // A continuation of the previous value.
                if section.as_deref() == Some("DEFAULT") {
                    return Err(err(
                        i,
                        format!("continuation line {t:?} would make a port value span lines"),
                    ));
                }
                continue;
            }
            if t.starts_with('[') {
                if !t.ends_with(']') || t.len() < 3 {
                    return Err(err(i, format!("malformed section header {t:?}")));
                }
                let name = t[1..t.len() - 1].to_string();
                if seen_sections.contains(&name) {
                    return Err(err(i, format!("section [{name}] appears twice")));
                }
                seen_sections.push(name.clone());
                if name == "DEFAULT" {
                    doc.insert_at = Some(i + 1);
                }
                section = Some(name);
                last_option_line = None;
                continue;
            }
            let Some(pos) = t.find(['=', ':']) else {
                return Err(err(i, format!("{t:?} is not a 'name = port' line")));
            };
            let Some(sec) = section.as_deref() else {
                return Err(err(i, format!("{t:?} comes before any [section] header")));
            };
            last_option_line = Some(i);
            let key = t[..pos].trim().to_lowercase();
            let value = t[pos + 1..].trim();
            if key.is_empty() {
                return Err(err(i, format!("{t:?} has no name")));
            }
            if sec != "DEFAULT" {
                continue;
            }
            doc.insert_at = Some(i + 1);
            let port = parse_port(value).map_err(|_| {
                err(
                    i,
                    format!("port {value:?} of {key:?} is not a number from 1 to 65535"),
                )
            })?;
            if let Some(prev) = doc.entries.iter().find(|e| e.name == key) {
                return Err(err(
                    i,
                    format!("{key:?} appears twice (also on line {})", prev.line + 1),
                ));
            }
            if let Some(prev) = doc.entries.iter().find(|e| e.port == port) {
                return Err(err(
                    i,
                    format!(
                        "port {port} of {key:?} is also held by {:?} (line {})",
                        prev.name,
                        prev.line + 1
                    ),
                ));
            }
            doc.entries.push(Entry {
                name: key,
                port,
                line: i,
            });
        }
        Ok(doc)
    }

    fn get(&self, name: &str) -> Option<u16> {
        self.entries.iter().find(|e| e.name == name).map(|e| e.port)
    }

    fn holder(&self, port: u16) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.port == port)
            .map(|e| e.name.as_str())
    }

    fn add(&mut self, name: &str, port: u16) {
        let text = format!("{name} = {port}");
        let at = match self.insert_at {
            Some(at) => at,
            None => {
                // A new [DEFAULT] section goes at the end, where no indented
                // line of the file can be taken for a continuation of ours;
                // ConfigParser reads [DEFAULT] wherever it stands.
                if self.lines.last().is_some_and(|l| !l.trim().is_empty()) {
                    self.lines.push(String::new());
                }
                self.lines.push("[DEFAULT]".to_string());
                self.lines.len()
            }
        };
        self.lines.insert(at, text);
        // An indented line after ours would read as its continuation, also
        // across comment lines (ConfigParser skips those inside a value); a
        // blank line right after ours ends the value.
        let next = self.lines[at + 1..].iter().find(|l| {
            let t = l.trim();
            !(t.starts_with('#') || t.starts_with(';'))
        });
        if next.is_some_and(|l| l.starts_with([' ', '\t']) && !l.trim().is_empty()) {
            self.lines.insert(at + 1, String::new());
        }
        self.insert_at = Some(at + 1);
        self.entries.push(Entry {
            name: name.to_string(),
            port,
            line: at,
        });
    }

    fn remove(&mut self, name: &str) -> bool {
        let Some(e) = self.entries.iter().position(|e| e.name == name) else {
            return false;
        };
        let line = self.entries.remove(e).line;
        self.lines.remove(line);
        for e in &mut self.entries {
            if e.line > line {
                e.line -= 1;
            }
        }
        if let Some(at) = self.insert_at.as_mut() {
            if *at > line {
                *at -= 1;
            }
        }
        true
    }

    fn text(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push('\n');
        s
    }
}

/// Parses registry text as [`Registry::list`] does (`path` only names the
/// file in errors). For fuzzing the reader.
#[cfg(any(test, feature = "testing"))]
pub fn parse_text(path: &Path, text: &str) -> Result<Vec<(String, u16)>> {
    Ok(Doc::parse(path, text)?
        .entries
        .into_iter()
        .map(|e| (e.name, e.port))
        .collect())
}

/// Parses `text`, adds `name = port` and removes `remove` the way a write
/// does, and returns the text that would be written. For fuzzing the writer
/// against the reader.
#[cfg(any(test, feature = "testing"))]
pub fn rewrite_text(text: &str, add: Option<(&str, u16)>, remove: Option<&str>) -> Result<String> {
    let mut doc = Doc::parse(Path::new("fuzz"), text)?;
    if let Some((name, port)) = add {
        let name = check_name(name)?;
        if doc.get(&name).is_none() && doc.holder(port).is_none() && port != 0 {
            doc.add(&name, port);
        }
    }
    if let Some(name) = remove {
        doc.remove(&check_name(name)?);
    }
    Ok(doc.text())
}

/// The registry file and the operations on it; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registry {
    path: PathBuf,
}

impl Registry {
    /// The registry at `path` (nothing is read or created yet).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The registry at [`Registry::default_path`]; when that is the
    /// per-user file, its directory is created if missing.
    pub fn open_default() -> Self {
        let path = Self::default_path();
        if path != Path::new(SYSTEM_PATH) && std::env::var_os(PATH_VARIABLE).is_none() {
            if let Some(dir) = path.parent() {
                // A failure shows up, with the path, at the first write.
                let _ = std::fs::create_dir_all(dir);
            }
        }
        Self::at(path)
    }

    /// `$PORT_FOR_CONF` if set; else `/etc/port-for.conf` where that file is
    /// writable, or absent in a writable `/etc`; else a per-user file,
    /// `$XDG_STATE_HOME/port-for/port-for.conf` (`~/.local/state/...`).
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os(PATH_VARIABLE).filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let system = Path::new(SYSTEM_PATH);
        let usable = if system.exists() {
            can_write(system)
        } else {
            system.parent().is_some_and(can_write)
        };
        if usable {
            return system.to_path_buf();
        }
        let state = std::env::var_os("XDG_STATE_HOME")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(std::env::temp_dir);
        state.join("port-for").join("port-for.conf")
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<Doc> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|e| RegistryError::Parse {
                    path: self.path.clone(),
                    line: 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
                        .iter()
                        .filter(|&&b| b == b'\n')
                        .count(),
                    reason: "not UTF-8 text".into(),
                })?;
                Doc::parse(&self.path, &text)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Doc::default()),
            Err(e) => Err(io_error("open", &self.path, &e)),
        }
    }

    /// Every association, in file order.
    pub fn list(&self) -> Result<Vec<(String, u16)>> {
        Ok(self
            .read()?
            .entries
            .into_iter()
            .map(|e| (e.name, e.port))
            .collect())
    }

    /// The port stored for `name`, if any.
    pub fn get(&self, name: &str) -> Result<Option<u16>> {
        let name = check_name(name)?;
        Ok(self.read()?.get(&name))
    }

    /// The port stored for `name`, or a good free port that no other name
    /// holds, stored for it (port-for's `port-for NAME`).
    pub fn get_or_assign(&self, name: &str) -> Result<u16> {
        let name = check_name(name)?;
        if let Some(p) = self.read()?.get(&name) {
            return Ok(p);
        }
        self.update(|doc| {
            if let Some(p) = doc.get(&name) {
                return Ok((p, false));
            }
            let taken: Vec<u16> = doc.entries.iter().map(|e| e.port).collect();
            let port = select_random(None, &taken)?;
            doc.add(&name, port);
            Ok((port, true))
        })
    }

    /// Associates `name` with `port` (port-for's `--bind NAME --port PORT`):
    /// nothing to do when it already is; an error when `name` holds another
    /// port or `port` belongs to another name.
    pub fn bind(&self, name: &str, port: u16) -> Result<u16> {
        let name = check_name(name)?;
        if port == 0 {
            return Err(RegistryError::InvalidPort("0".into()));
        }
        self.update(|doc| {
            match doc.get(&name) {
                Some(p) if p == port => return Ok((p, false)),
                Some(held) => {
                    return Err(RegistryError::NameHoldsOtherPort {
                        name: name.clone(),
                        held,
                        requested: port,
                    })
                }
                None => {}
            }
            if let Some(holder) = doc.holder(port) {
                return Err(RegistryError::PortTaken {
                    port,
                    holder: holder.to_string(),
                });
            }
            doc.add(&name, port);
            Ok((port, true))
        })
    }

    /// Removes the association of `name`; `false` when there was none.
    pub fn unbind(&self, name: &str) -> Result<bool> {
        let name = check_name(name)?;
        self.update(|doc| {
            let removed = doc.remove(&name);
            Ok((removed, removed))
        })
    }

    /// Runs `change` on the current file under the lock; when it reports a
    /// change, replaces the file atomically.
    fn update<T>(&self, change: impl FnOnce(&mut Doc) -> Result<(T, bool)>) -> Result<T> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let lock_path = sibling(&self.path, ".lock");
        let lock = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(&lock_path)
            .map_err(|e| io_error("open", &lock_path, &e))?;
        lock_exclusive(lock.as_fd())?;
        // Read again under the lock: another writer may have changed it.
        let mut doc = self.read()?;
        let (value, changed) = change(&mut doc)?;
        if changed {
            self.replace(&dir, &doc.text())?;
        }
        // Closing `lock` releases it.
        Ok(value)
    }

    /// Writes `text` to a temporary file, fsyncs it, renames it over the
    /// registry and fsyncs the directory.
    fn replace(&self, dir: &Path, text: &str) -> Result<()> {
        let tmp = sibling(&self.path, ".tmp");
        let mode = std::fs::metadata(&self.path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| io_error("open", &tmp, &e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| io_error("write", &tmp, &e))?;
        fsync(f.as_fd())?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(|e| io_error("rename", &self.path, &e))?;
        let d = File::open(dir).map_err(|e| io_error("open", dir, &e))?;
        fsync(d.as_fd())?;
        Ok(())
    }
}

/// `dir/.name.suffix` for `dir/name`: a hidden file next to the registry.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Doc> {
        Doc::parse(Path::new("t.conf"), s)
    }

    #[test]
    fn a_permission_error_points_to_the_variable_not_to_a_program() {
        let e = RegistryError::Sys(crate::sys::Error::new("open", "/etc/x.conf", errno::EACCES));
        assert!(e.is_permission());
        let text = e.to_string();
        assert!(
            text.ends_with(&format!(
                "(choose another registry file with ${PATH_VARIABLE})"
            )),
            "{text}"
        );
        assert!(!text.contains("--conf"), "{text}");
        let e = RegistryError::Sys(crate::sys::Error::new("open", "/etc/x.conf", errno::ENOENT));
        assert!(!e.is_permission());
        assert!(!e.to_string().contains("choose another"));
    }

    #[test]
    fn reads_what_configparser_writes() {
        let d = parse("[DEFAULT]\nfoo = 37987\nexample.com/apache = 35456\n\n").unwrap();
        assert_eq!(d.get("foo"), Some(37987));
        assert_eq!(d.get("example.com/apache"), Some(35456));
    }

    #[test]
    fn names_are_lower_cased_and_colon_works_as_delimiter() {
        let d = parse("# comment\n[DEFAULT]\nFoo: 1234\n; another\n[other]\nx = y\n  continued\n")
            .unwrap();
        assert_eq!(d.get("foo"), Some(1234));
        assert_eq!(d.entries.len(), 1);
    }

    #[test]
    fn adding_keeps_other_lines() {
        let mut d = parse("# keep me\n[DEFAULT]\na = 1000\n\n[other]\nk = v\n").unwrap();
        d.add("b", 2000);
        assert_eq!(
            d.text(),
            "# keep me\n[DEFAULT]\na = 1000\nb = 2000\n\n[other]\nk = v\n"
        );
        let mut e = parse("").unwrap();
        e.add("x", 3000);
        assert_eq!(e.text(), "[DEFAULT]\nx = 3000\n");
        let mut f = parse("[other]\nk = v\n").unwrap();
        f.add("x", 3000);
        assert_eq!(f.text(), "[other]\nk = v\n\n[DEFAULT]\nx = 3000\n");
        assert!(f.remove("x"));
        assert!(!f.remove("x"));
    }

    /// Found by the `registry_file` fuzz target: adding [DEFAULT] in front of
    /// an indented line made that line a continuation of the new entry, and
    /// the file we wrote no longer parsed.
    #[test]
    fn fuzz_regression_indented_line_after_a_new_entry() {
        for text in [
            "# cv\n [DE*}A9TU)0L]\nA:] \n",
            "[DEFAULT]\n  [x]\n",
            // A comment between the new entry and the indented line.
            "[DT]\n[DEFAULT]\n#\n [c]\n\n; x\n k = v\n",
        ] {
            let written = rewrite_text(text, Some(("zz-fuzz-new", 1)), None).unwrap();
            let back = parse_text(Path::new("t"), &written).unwrap();
            assert!(
                back.iter().any(|(n, p)| n == "zz-fuzz-new" && *p == 1),
                "{written:?}"
            );
        }
    }

    #[test]
    fn malformed_lines_are_named() {
        let line = |s: &str| match parse(s) {
            Err(RegistryError::Parse { line, .. }) => line,
            other => panic!("{other:?}"),
        };
        assert_eq!(line("[DEFAULT]\nfoo = 1\nbroken line\n"), 3);
        assert_eq!(line("foo = 1\n"), 1);
        assert_eq!(line("[DEFAULT]\nfoo = abc\n"), 2);
        assert_eq!(line("[DEFAULT]\nfoo = 70000\n"), 2);
        assert_eq!(line("[DEFAULT]\nfoo = 1\nFOO = 2\n"), 3);
        assert_eq!(line("[DEFAULT]\nfoo = 1\nbar = 1\n"), 3);
        assert_eq!(line("[DEFAULT]\nfoo = 1\n  2\n"), 3);
        assert_eq!(line("[DEFAULT\n"), 1);
        assert_eq!(line("[DEFAULT]\n[DEFAULT]\n"), 2);
    }

    #[test]
    fn names_port_for_would_lose_are_refused() {
        for bad in ["", "a=b", "a:b", "[x", "#x", ";x", "a\nb", " x"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_name("Example.COM/apache").unwrap(),
            "example.com/apache"
        );
        for bad in ["0", "65536", "-1", "abc", "", "+5"] {
            assert!(parse_port(bad).is_err(), "{bad:?}");
        }
    }
}
