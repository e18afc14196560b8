//! NVMe device facts the kernel does not put in sysfs: the name a Compute
//! Engine persistent disk on an NVMe machine family (C3, C4, N4, ...) was
//! attached as, which Compute Engine writes into the vendor-specific part
//! of the namespace's Identify data.
//!
//! The guest environment's udev rules read it so (guest-configs
//! `src/lib/udev/google_nvme_id`, run by `65-gce-disk-naming.rules` for
//! namespaces whose controller model is `nvme_card-pd`): `nvme id-ns -b`
//! (the 4,096-byte Identify Namespace page), the bytes from offset 384 on,
//! a JSON text whose `"device_name"` is the attach's `deviceName`; the
//! rules then link `/dev/disk/by-id/google-<deviceName>`. Without those
//! rules no link names the disk; [`device_name`] reads the same page with
//! the NVMe admin command (root only), so the node can still find it.
//!
//! Tests, where no NVMe device exists, plant the page as a file:
//! with `APPSCALE_PERSIST_SYS_ROOT` set ([`crate::blockdev::SYS_ROOT_ENV`]),
//! the page of namespace `nvmeXnY` is read from
//! `<sys root>/block/nvmeXnY/nvme-id-ns` instead of asked of the device.

use std::os::fd::AsRawFd;
use std::path::Path;

/// The controller model of Compute Engine persistent disks on NVMe
/// (`/sys/block/nvmeXnY/device/model`); local SSDs are `nvme_card`.
pub const GOOGLE_PD_MODEL: &str = "nvme_card-pd";

/// Where the vendor-specific part of Identify Namespace starts.
const VENDOR_OFFSET: usize = 384;

/// The size of an Identify page.
const PAGE: usize = 4096;

/// `struct nvme_passthru_cmd` of `<linux/nvme_ioctl.h>`.
#[repr(C)]
#[derive(Default)]
struct PassthruCmd {
    opcode: u8,
    flags: u8,
    rsvd1: u16,
    nsid: u32,
    cdw2: u32,
    cdw3: u32,
    metadata: u64,
    addr: u64,
    metadata_len: u32,
    data_len: u32,
    cdw10: u32,
    cdw11: u32,
    cdw12: u32,
    cdw13: u32,
    cdw14: u32,
    cdw15: u32,
    timeout_ms: u32,
    result: u32,
}

nix::ioctl_readwrite!(
    /// `NVME_IOCTL_ADMIN_CMD`: send an admin command to the controller.
    nvme_admin_cmd,
    b'N',
    0x41,
    PassthruCmd
);

/// The namespace id of a namespace's kernel name: `nvme0n2` → 2.
pub fn nsid(kernel_name: &str) -> Option<u32> {
    let rest = kernel_name.strip_prefix("nvme")?;
    let (_, ns) = rest.split_once('n')?;
    let digits: String = ns.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The Identify Namespace page of `device` (namespace `nsid`), by the NVMe
/// admin command (opcode 0x06, CNS 0).
fn identify_namespace(device: &Path, nsid: u32) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(device)?;
    let mut page = vec![0u8; PAGE];
    let mut cmd = PassthruCmd {
        opcode: 0x06,
        nsid,
        addr: page.as_mut_ptr() as u64,
        data_len: PAGE as u32,
        ..PassthruCmd::default()
    };
    // SAFETY: `cmd` is a valid nvme_passthru_cmd whose buffer (`page`,
    // PAGE bytes) outlives the call; the kernel writes at most data_len.
    unsafe { nvme_admin_cmd(f.as_raw_fd(), &mut cmd) }.map_err(std::io::Error::from)?;
    Ok(page)
}

/// The page of namespace `kernel_name` (`nvme0n1`): planted under the sys
/// root in tests, else asked of `device`.
fn page_of(kernel_name: &str, device: &Path) -> std::io::Result<Vec<u8>> {
    if std::env::var_os(crate::blockdev::SYS_ROOT_ENV).is_some() {
        let planted = crate::blockdev::sys_root()
            .join("block")
            .join(kernel_name)
            .join("nvme-id-ns");
        return std::fs::read(planted);
    }
    let ns = nsid(kernel_name).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{kernel_name} is not an NVMe namespace"),
        )
    })?;
    identify_namespace(device, ns)
}

/// The `deviceName` a Compute Engine NVMe persistent disk (`kernel_name`,
/// at `device`) was attached as, read from its Identify Namespace page as
/// `google_nvme_id` reads it. `Ok(None)`: the page holds no name.
pub fn device_name(kernel_name: &str, device: &Path) -> std::io::Result<Option<String>> {
    Ok(name_in_page(&page_of(kernel_name, device)?))
}

/// The `"device_name": "NAME"` of an Identify Namespace page's
/// vendor-specific part (NAME of `[A-Za-z0-9_-]`, as google_nvme_id takes
/// it).
pub fn name_in_page(page: &[u8]) -> Option<String> {
    let vendor = page.get(VENDOR_OFFSET..)?;
    let end = vendor.iter().position(|b| *b == 0).unwrap_or(vendor.len());
    let text = String::from_utf8_lossy(&vendor[..end]);
    let key = "\"device_name\"";
    let rest = &text[text.find(key)? + key.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    (!name.is_empty() && rest[name.len()..].starts_with('"')).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page as Compute Engine fills it: zeros, then the JSON from 384.
    pub fn page(json: &str) -> Vec<u8> {
        let mut p = vec![0u8; PAGE];
        p[VENDOR_OFFSET..VENDOR_OFFSET + json.len()].copy_from_slice(json.as_bytes());
        p
    }

    #[test]
    fn the_device_name_is_read_as_google_nvme_id_reads_it() {
        let p = page(r#"{"device_name":"data-0","disk_type":"PERSISTENT"}"#);
        assert_eq!(name_in_page(&p).as_deref(), Some("data-0"));
        let p = page(r#"{"disk_type":"PERSISTENT", "device_name": "persistent-disk-0"}"#);
        assert_eq!(name_in_page(&p).as_deref(), Some("persistent-disk-0"));
        assert_eq!(name_in_page(&page("")), None);
        assert_eq!(name_in_page(&page(r#"{"device_name":""}"#)), None);
        assert_eq!(name_in_page(&page(r#"{"device_name":"a b"}"#)), None);
        assert_eq!(name_in_page(&[0u8; 100]), None);
    }

    #[test]
    fn namespace_ids_come_from_the_kernel_name() {
        assert_eq!(nsid("nvme0n1"), Some(1));
        assert_eq!(nsid("nvme12n3"), Some(3));
        assert_eq!(nsid("nvme0n1p2"), Some(1));
        assert_eq!(nsid("sda"), None);
    }

    #[test]
    fn the_admin_command_struct_has_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<PassthruCmd>(), 72);
    }
}
