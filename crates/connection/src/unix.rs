//! Binding a unix socket, and removing its file at the end.
//!
//! A socket file outlives the process that bound it when that process is
//! killed, and binding over an existing file fails. So, before binding:
//!
//! - no file: bind;
//! - a socket nobody listens on (connecting is refused): a leftover of a
//!   crash, removed, then bind;
//! - a socket something listens on: refused ("in use"), the file left
//!   alone: two services on one socket would share its connections;
//! - anything else (a regular file, a directory): refused, untouched.
//!
//! After binding, the file's mode is set (its only access control: whoever
//! may open it reaches the service, as with php-fpm's `listen.mode`). A
//! graceful stop removes the file ([`SocketFile`]), unless another file
//! has taken its place meanwhile.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Type};

/// A bound socket's file; dropping this removes it if it is still the
/// file that was bound.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// Device and inode of the bound file, so that a file someone put in
    /// its place is not removed.
    identity: (u64, u64),
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // The type as well: a freed inode number is soon given again.
        let ours = fs::symlink_metadata(&self.path).is_ok_and(|meta| {
            meta.file_type().is_socket() && (meta.dev(), meta.ino()) == self.identity
        });
        if ours && let Err(error) = fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), %error, "cannot remove the unix socket");
        }
    }
}

/// Binds `path` as the module says and sets its `mode`.
pub(crate) fn bind(path: &Path, mode: u32) -> io::Result<(UnixListener, SocketFile)> {
    let shown = path.display();
    let context = |error: io::Error, what: &str| {
        io::Error::new(error.kind(), format!("{what} unix socket {shown}: {error}"))
    };
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if listened_on(path)? {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("unix socket {shown} is in use: another process listens on it"),
                ));
            }
            tracing::info!(path = %shown, "removing a stale unix socket nobody listens on");
            fs::remove_file(path).map_err(|error| context(error, "removing stale"))?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{shown} exists and is not a socket; left untouched"),
            ));
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(context(error, "checking")),
    }
    let listener = UnixListener::bind(path).map_err(|error| context(error, "binding"))?;
    let meta = fs::metadata(path).map_err(|error| context(error, "reading"))?;
    let file = SocketFile {
        path: path.to_owned(),
        identity: (meta.dev(), meta.ino()),
    };
    // On error, `file` is dropped and removes what was bound.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|error| context(error, "setting the mode of"))?;
    Ok((listener, file))
}

/// Whether a process accepts connections on the socket at `path`: a
/// non-blocking connect, so a listener with a full backlog (`EAGAIN`)
/// counts as one rather than blocking the start.
fn listened_on(path: &Path) -> io::Result<bool> {
    let socket = socket2::Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&SockAddr::unix(path)?) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => Ok(false),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(true),
        Err(error) => Err(io::Error::new(
            error.kind(),
            format!("checking unix socket {}: {error}", path.display()),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("es-unix-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_stale_socket_is_replaced_a_live_one_refused_and_other_files_untouched() {
        let dir = dir("bind");
        let path = dir.join("s.sock");
        // A socket whose listener is gone, as a killed process leaves it.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let (listener, file) = bind(&path, 0o660).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);

        let error = bind(&path, 0o660).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        assert!(error.to_string().contains("in use"), "{error}");
        assert!(path.exists(), "a live socket is left alone");

        drop(listener);
        drop(file);
        assert!(!path.exists(), "removed when dropped");

        let plain = dir.join("plain");
        fs::write(&plain, "keep me").unwrap();
        let error = bind(&plain, 0o660).unwrap_err();
        assert!(error.to_string().contains("not a socket"), "{error}");
        assert_eq!(fs::read_to_string(&plain).unwrap(), "keep me");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_put_in_the_sockets_place_is_not_removed() {
        let dir = dir("replaced");
        let path = dir.join("s.sock");
        let (listener, file) = bind(&path, 0o600).unwrap();
        drop(listener);
        fs::remove_file(&path).unwrap();
        fs::write(&path, "someone else's").unwrap();
        drop(file);
        assert_eq!(fs::read_to_string(&path).unwrap(), "someone else's");
        fs::remove_dir_all(&dir).unwrap();
    }
}
