//! Dropping root after the listeners are bound (`--user`): wtgate binds port 80 as root, then
//! serves as an unprivileged user. glibc applies `setuid`/`setgid` to every thread of the process,
//! so the shards, already started, change too.

use std::ffi::CString;
use std::io;

/// A user's ids, looked up by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// Looks `name` up in the user database.
pub fn lookup(name: &str) -> Result<Ids, String> {
    let c = CString::new(name).map_err(|_| format!("'{name}' is not a user name"))?;
    let mut pwd: libc::passwd = unsafe_zeroed_passwd();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `c` is NUL-terminated, `pwd` and `found` are
    // locals, and `buf` is a live buffer of the length given.
    let rc = unsafe {
        libc::getpwnam_r(
            c.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 {
        return Err(format!(
            "looking up user '{name}': {}",
            io::Error::from_raw_os_error(rc)
        ));
    }
    if found.is_null() {
        return Err(format!("no user '{name}' (see getent passwd)"));
    }
    Ok(Ids {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

fn unsafe_zeroed_passwd() -> libc::passwd {
    // SAFETY: `passwd` is a plain C struct of integers and pointers, for which all-zero (null
    // pointers, id 0) is a valid value; getpwnam_r fills it before anything reads it.
    unsafe { std::mem::zeroed() }
}

/// Becomes `name`: its group alone as supplementary groups, its gid, its uid — in that order, as
/// the group changes need root.
pub fn become_user(name: &str) -> Result<Ids, String> {
    let ids = lookup(name)?;
    let fail = |what: &str| format!("--user {name}: {what}: {}", io::Error::last_os_error());
    // SAFETY: setgroups reads one gid from a valid local; setgid/setuid take plain integers.
    unsafe {
        if libc::setgroups(1, &ids.gid) != 0 {
            return Err(fail("setgroups"));
        }
        if libc::setgid(ids.gid) != 0 {
            return Err(fail("setgid"));
        }
        if libc::setuid(ids.uid) != 0 {
            return Err(fail("setuid"));
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_users_up() {
        assert_eq!(lookup("root"), Ok(Ids { uid: 0, gid: 0 }));
        assert!(lookup("no-such-user-here").unwrap_err().contains("no user"));
        assert!(lookup("a\0b").is_err());
    }
}
