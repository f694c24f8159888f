//! `warden logs [NAME] [-f]`: the logs of the mesh's processes, from `<state>/logs`, named
//! the way `warden status` names the processes (`gateway`, `team-beta/specialist sidecar`);
//! NAME may also be an agent (`team-beta/specialist`: its sidecar and app).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One process's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    /// The process name, as `warden status` shows it.
    pub name: String,
    /// The agent it belongs to (`namespace/name`), if any.
    pub agent: Option<String>,
    /// The file.
    pub path: PathBuf,
}

fn parse(path: PathBuf) -> Option<LogFile> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".log")?.to_owned();
    if stem == "gateway" {
        return Some(LogFile {
            name: stem,
            agent: None,
            path,
        });
    }
    let (agent, role) = stem.rsplit_once('.')?;
    // Namespaces are DNS labels (no dots); the first dot ends the namespace.
    let (namespace, name) = agent.split_once('.')?;
    let agent = format!("{namespace}/{name}");
    Some(LogFile {
        name: format!("{agent} {role}"),
        agent: Some(agent),
        path,
    })
}

/// Every log in `<state>/logs`, sorted by name.
pub fn log_files(state_dir: &Path) -> Result<Vec<LogFile>, String> {
    let dir = state_dir.join("logs");
    let entries = std::fs::read_dir(&dir).map_err(|e| {
        format!(
            "{}: {e} (has `warden up` run with this --state-dir?)",
            dir.display()
        )
    })?;
    let mut files: Vec<LogFile> = entries
        .filter_map(|e| e.ok().and_then(|e| parse(e.path())))
        .collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// The logs `name` selects (all when `None`); an unknown name is an error listing the names.
pub fn select(files: Vec<LogFile>, name: Option<&str>) -> Result<Vec<LogFile>, String> {
    let Some(name) = name else {
        return Ok(files);
    };
    let chosen: Vec<LogFile> = files
        .iter()
        .filter(|f| f.name == name || f.agent.as_deref() == Some(name))
        .cloned()
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        return Err(format!(
            "no process or agent named {name:?}; the logs are: {}",
            names.join(", ")
        ));
    }
    Ok(chosen)
}

/// Copies what `file` gained since `offset` to `out`, each line prefixed with `prefix`;
/// returns the new offset (0 again when the file was truncated).
fn copy_new(file: &LogFile, offset: u64, prefix: &str, out: &mut impl Write) -> u64 {
    let Ok(mut f) = std::fs::File::open(&file.path) else {
        return offset;
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let from = if len < offset { 0 } else { offset };
    if f.seek(SeekFrom::Start(from)).is_err() {
        return offset;
    }
    let mut bytes = Vec::new();
    if f.read_to_end(&mut bytes).is_err() {
        return offset;
    }
    // Only whole lines; a partial last line waits for its end.
    let end = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    for line in String::from_utf8_lossy(&bytes[..end]).lines() {
        let _ = writeln!(out, "{prefix}{line}");
    }
    let _ = out.flush();
    from + end as u64
}

/// Prints `files` (prefixed with `[name] ` when there are several); with `follow`, keeps
/// printing what they gain until the future is dropped.
pub async fn print(files: &[LogFile], follow: bool, out: &mut (impl Write + Send)) {
    let prefix = |f: &LogFile| match files.len() {
        1 => String::new(),
        _ => format!("[{}] ", f.name),
    };
    let mut offsets: Vec<u64> = files
        .iter()
        .map(|f| copy_new(f, 0, &prefix(f), out))
        .collect();
    if !follow {
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (f, offset) in files.iter().zip(offsets.iter_mut()) {
            *offset = copy_new(f, *offset, &prefix(f), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_status_and_an_unknown_name_lists_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("logs")).unwrap();
        for f in [
            "gateway.log",
            "team-beta.specialist.sidecar.log",
            "team-beta.specialist.app.log",
        ] {
            std::fs::write(dir.path().join("logs").join(f), "line\n").unwrap();
        }
        let files = log_files(dir.path()).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "gateway",
                "team-beta/specialist app",
                "team-beta/specialist sidecar"
            ]
        );
        assert_eq!(
            select(files.clone(), Some("team-beta/specialist"))
                .unwrap()
                .len(),
            2
        );
        let err = select(files, Some("nope")).unwrap_err();
        assert!(err.contains("gateway") && err.contains("nope"), "{err}");
    }

    #[test]
    fn only_whole_new_lines_are_copied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.log");
        std::fs::write(&path, "one\ntw").unwrap();
        let file = parse(path.clone()).unwrap();
        let mut out = Vec::new();
        let offset = copy_new(&file, 0, "> ", &mut out);
        assert_eq!(String::from_utf8_lossy(&out), "> one\n");
        std::fs::write(&path, "one\ntwo\n").unwrap();
        copy_new(&file, offset, "> ", &mut out);
        assert_eq!(String::from_utf8_lossy(&out), "> one\n> two\n");
    }
}
