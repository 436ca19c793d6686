//! What the judge's integration tests share.

use std::path::PathBuf;

/// A directory of its own per test, removed at the end.
pub struct Dir(pub PathBuf);

impl Dir {
    /// `<tmp>/gsd-verdict-<test>-<name>-<pid>`, empty.
    pub fn new(test: &str, name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("gsd-verdict-{test}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    /// Writes `body` to `name` in it.
    pub fn file(&self, name: &str, body: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, body).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
