//! The embedded state store: one small file per key under a directory,
//! replaced atomically by writing a temporary file and renaming it.

use super::{StateError, StateResult, StateStore};
use async_trait::async_trait;
use bytes::Bytes;
use std::path::{Path, PathBuf};

pub struct EmbeddedState {
    root: PathBuf,
}

impl EmbeddedState {
    pub fn open(root: &Path) -> std::io::Result<EmbeddedState> {
        std::fs::create_dir_all(root)?;
        Ok(EmbeddedState {
            root: root.to_path_buf(),
        })
    }

    fn path(&self, key: &str) -> StateResult<PathBuf> {
        let safe = !key.is_empty()
            && key
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != ".." && !s.starts_with(".tmp"));
        if !safe {
            return Err(StateError(format!("unsafe key {key:?}")));
        }
        Ok(self.root.join(key))
    }
}

fn err(path: &Path, e: std::io::Error) -> StateError {
    StateError(format!("{}: {e}", path.display()))
}

#[async_trait]
impl StateStore for EmbeddedState {
    async fn get(&self, key: &str) -> StateResult<Option<Bytes>> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(&path, e)),
        }
    }

    async fn put(&self, key: &str, value: Bytes) -> StateResult<()> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
        // One trip to the blocking pool for the whole replace; the directory
        // usually exists, so it is only created when the write says so.
        let replace = move || -> StateResult<()> {
            if let Err(e) = std::fs::write(&tmp, &value) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(err(&tmp, e));
                }
                std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
                std::fs::write(&tmp, &value).map_err(|e| err(&tmp, e))?;
            }
            std::fs::rename(&tmp, &path).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                err(&path, e)
            })
        };
        tokio::task::spawn_blocking(replace)
            .await
            .map_err(|e| StateError(format!("state write task: {e}")))?
    }

    async fn delete(&self, key: &str) -> StateResult<()> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(&path, e)),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> StateResult<()> {
        let path = self.path(prefix)?;
        match tokio::fs::remove_dir_all(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(&path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_delete_and_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedState::open(dir.path()).unwrap();
        assert_eq!(store.get("r/ab").await.unwrap(), None);
        store.put("r/ab", Bytes::from_static(b"1")).await.unwrap();
        store.put("r/ab", Bytes::from_static(b"2")).await.unwrap();
        assert_eq!(
            store.get("r/ab").await.unwrap().unwrap(),
            Bytes::from_static(b"2")
        );
        store.put("s/cd", Bytes::from_static(b"3")).await.unwrap();
        store.delete_prefix("r").await.unwrap();
        assert_eq!(store.get("r/ab").await.unwrap(), None);
        assert!(store.get("s/cd").await.unwrap().is_some());
        store.delete("s/cd").await.unwrap();
        store.delete("s/cd").await.unwrap();
        assert!(store.get("../x").await.is_err());
    }
}
