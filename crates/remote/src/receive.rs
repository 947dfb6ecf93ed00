//! The receiving side of the session's FileSend service, where the daemon's exporter sends
//! the result back: a local directory output as fsutil's DiffCopy in the other direction (the
//! daemon lists STATs, rbuild requests each regular file by its index with REQ, writes its DATA
//! and answers FIN when every file is written), and a file output (tar) as raw byte messages
//! appended to the file.

use crate::proto::filesync::BytesMessage;
use crate::proto::fsutil_types::{packet::PacketType, Packet, Stat};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

/// Go's `os.FileMode` type bits (see `filesync`).
const GO_DIR: u32 = 1 << 31;
const GO_SYMLINK: u32 = 1 << 27;
const GO_TYPE: u32 =
    GO_DIR | GO_SYMLINK | (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19);

/// The host path of `rel` under `dest`; None for a path that would leave it.
fn inside(dest: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    Some(dest.join(rel))
}

fn packet(kind: PacketType) -> Packet {
    Packet {
        r#type: kind as i32,
        ..Default::default()
    }
}

/// Unix permission bits (with setuid/setgid/sticky) of a Go file mode.
fn unix_mode(go: u32) -> u32 {
    let mut mode = go & 0o777;
    if go & (1 << 23) != 0 {
        mode |= 0o4000;
    }
    if go & (1 << 22) != 0 {
        mode |= 0o2000;
    }
    if go & (1 << 20) != 0 {
        mode |= 0o1000;
    }
    mode
}

async fn apply_mode(path: &Path, stat: &Stat) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(unix_mode(stat.mode))).await
}

/// Receives a directory into `dest`; `tx` carries rbuild's packets back to the daemon.
pub(crate) async fn receive_dir(
    dest: PathBuf,
    mut incoming: Streaming<Packet>,
    tx: mpsc::Sender<Result<Packet, Status>>,
) -> Result<(), String> {
    tokio::fs::create_dir_all(&dest)
        .await
        .map_err(|e| format!("creating {}: {e}", dest.display()))?;
    let mut index: u32 = 0;
    let mut wanted: HashMap<u32, (PathBuf, Stat)> = HashMap::new();
    let mut open: HashMap<u32, tokio::fs::File> = HashMap::new();
    let mut listing_done = false;
    let mut dirs = Vec::new();
    loop {
        let Some(p) = incoming.message().await.map_err(|e| e.to_string())? else {
            return Err("the daemon ended the output stream early".into());
        };
        match PacketType::try_from(p.r#type) {
            Ok(PacketType::PacketStat) => {
                let Some(stat) = p.stat else {
                    listing_done = true;
                    // Ask for every file at once; the daemon sends them in any order.
                    for id in wanted.keys() {
                        let mut req = packet(PacketType::PacketReq);
                        req.id = *id;
                        tx.send(Ok(req)).await.map_err(|e| e.to_string())?;
                    }
                    if wanted.is_empty() {
                        break;
                    }
                    continue;
                };
                let id = index;
                index += 1;
                let Some(path) = inside(&dest, &stat.path) else {
                    return Err(format!(
                        "the daemon sent a path outside the output: {}",
                        stat.path
                    ));
                };
                if stat.mode & GO_DIR != 0 {
                    tokio::fs::create_dir_all(&path)
                        .await
                        .map_err(|e| format!("creating {}: {e}", path.display()))?;
                    dirs.push((path, stat));
                } else if stat.mode & GO_SYMLINK != 0 {
                    let _ = tokio::fs::remove_file(&path).await;
                    tokio::fs::symlink(&stat.linkname, &path)
                        .await
                        .map_err(|e| format!("creating {}: {e}", path.display()))?;
                } else if stat.mode & GO_TYPE == 0 {
                    if !stat.linkname.is_empty() {
                        // A hard link to an entry already received.
                        if let Some(target) = inside(&dest, &stat.linkname) {
                            let _ = tokio::fs::remove_file(&path).await;
                            tokio::fs::hard_link(&target, &path)
                                .await
                                .map_err(|e| format!("linking {}: {e}", path.display()))?;
                        }
                        continue;
                    }
                    let file = tokio::fs::File::create(&path)
                        .await
                        .map_err(|e| format!("creating {}: {e}", path.display()))?;
                    open.insert(id, file);
                    wanted.insert(id, (path, stat));
                }
                // Devices, pipes and sockets are not written (as an unprivileged client).
            }
            Ok(PacketType::PacketData) => {
                let Some(file) = open.get_mut(&p.id) else {
                    return Err(format!("the daemon sent data for an unknown file {}", p.id));
                };
                if p.data.is_empty() {
                    if let Some(mut file) = open.remove(&p.id) {
                        file.flush().await.map_err(|e| e.to_string())?;
                    }
                    if let Some((path, stat)) = wanted.remove(&p.id) {
                        apply_mode(&path, &stat)
                            .await
                            .map_err(|e| format!("chmod {}: {e}", path.display()))?;
                    }
                    if listing_done && wanted.is_empty() {
                        break;
                    }
                } else {
                    file.write_all(&p.data)
                        .await
                        .map_err(|e| format!("writing the output: {e}"))?;
                }
            }
            Ok(PacketType::PacketErr) => {
                return Err(format!(
                    "error from the daemon: {}",
                    String::from_utf8_lossy(&p.data)
                ))
            }
            Ok(PacketType::PacketFin) => break,
            _ => {}
        }
    }
    // Directories get their modes last, so a read-only one does not stop its children.
    for (path, stat) in dirs.iter().rev() {
        let _ = apply_mode(path, stat).await;
    }
    tx.send(Ok(packet(PacketType::PacketFin)))
        .await
        .map_err(|e| e.to_string())?;
    // The daemon answers FIN and closes the stream.
    while let Ok(Some(_)) = incoming.message().await {}
    Ok(())
}

/// Receives a file output (a tar) into `dest`.
pub(crate) async fn receive_file(
    dest: PathBuf,
    mut incoming: Streaming<BytesMessage>,
) -> Result<(), String> {
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    let mut file = tokio::fs::File::create(&dest)
        .await
        .map_err(|e| format!("creating {}: {e}", dest.display()))?;
    while let Some(message) = incoming.message().await.map_err(|e| e.to_string())? {
        file.write_all(&message.data)
            .await
            .map_err(|e| format!("writing {}: {e}", dest.display()))?;
    }
    file.flush().await.map_err(|e| e.to_string())?;
    Ok(())
}
